"""Typed exceptions with user-facing Chinese messages.

Every error the UI may show derives from WendaoError and carries `message_zh`; the UI prints that
message (never a traceback) and the CLI prints it as the skip reason.
"""
from __future__ import annotations


class WendaoError(Exception):
    """Base class: `message_zh` is what users see; `str(err)` is the same text."""

    default_message = "操作失败。"

    def __init__(self, message_zh: str | None = None):
        self.message_zh = message_zh or self.default_message
        super().__init__(self.message_zh)


# --- document input -------------------------------------------------------------------------
class DocumentError(WendaoError):
    """A single uploaded file could not be indexed; other files and the index are unaffected."""


class UnsupportedFileType(DocumentError):
    default_message = "不支持的文件类型。支持：PDF、DOCX、TXT、MD、CSV、HTML。"


class LegacyOfficeFormat(UnsupportedFileType):
    """An old binary Office file (.doc, .xls, .ppt): not read; saved again in the new format it is."""

    default_message = "不支持旧版 Office 格式，请另存为新格式（.docx、.xlsx、.pptx）后上传。"


class EmptyDocument(DocumentError):
    default_message = "文件是空的，没有可以索引的内容。"


class EncryptedPDF(DocumentError):
    default_message = "PDF 已加密（需要密码），请先解除密码保护后再上传。"


class CorruptFile(DocumentError):
    default_message = "文件已损坏或格式不正确，无法读取。"


class UnsafeXml(CorruptFile):
    """An Office package whose XML declares a DTD (entities): never written by Office (ECMA-376
    forbids it), the vehicle of entity bombs and external-entity reads."""

    default_message = ("文件里含有 DTD（文档类型定义）或实体声明。正规的 Office/WPS 不会写入这些内容，"
                       "它们可能被用来读取服务器上的文件或制造“实体炸弹”，为安全起见已拒绝。"
                       "请用 Office/WPS 打开后重新另存，再上传。")


class FileTooLarge(DocumentError):
    default_message = "文件太大，超过了允许的上限。"


class EncryptedOrLegacyOffice(DocumentError):
    """An .xlsx/.pptx that is really an OLE file: password-protected, or the old binary format renamed."""

    default_message = "文件是加密的 Office 文档或旧版（.xls/.ppt）格式，无法读取。请去掉密码或另存为新格式后再上传。"


class NoExtractableText(DocumentError):
    default_message = "没有可提取的文字（可能是扫描件或字体损坏的 PDF），请先做 OCR 再上传。"


class BinaryContent(DocumentError):
    default_message = "文件内容不是文本（看起来是图片、压缩包或程序等二进制文件），无法索引。"


class DocumentTooLong(DocumentError):
    default_message = "文档文字太多，超过了单个文档的上限，请拆分成几个较小的文件后再上传。"


class NotARegularFile(DocumentError):
    """A symbolic link, FIFO, device or /proc file named for ingest (services.documents.files)."""

    default_message = "这不是普通文件，不会读取。"


class FileUnreadable(DocumentError):
    default_message = "无法读取文件。"

    @classmethod
    def from_os_error(cls, exc: OSError) -> "FileUnreadable":
        """A Chinese reason for an OSError (the system's own text is English and may hold paths)."""
        import errno

        reasons = {errno.ENOENT: "文件不存在", errno.EACCES: "没有读取权限", errno.EPERM: "没有读取权限",
                   errno.EISDIR: "这是一个文件夹，不是文件", errno.ENAMETOOLONG: "文件名太长",
                   errno.EIO: "磁盘读写错误", errno.ELOOP: "符号链接循环"}
        reason = reasons.get(exc.errno or -1, f"系统错误码 {exc.errno}" if exc.errno else "未知系统错误")
        return cls(f"无法读取文件：{reason}。")


# --- knowledge bases ------------------------------------------------------------------------
class KnowledgeBaseError(WendaoError):
    default_message = "知识库操作失败。"


class KnowledgeBaseNotFound(KnowledgeBaseError):
    default_message = "找不到这个知识库。"


class AmbiguousKnowledgeBase(KnowledgeBaseError):
    """Two knowledge bases the principal may see share the name asked for (names are unique per owner)."""

    default_message = "有多个知识库叫这个名字，请改用编号指定。"


class InvalidName(KnowledgeBaseError):
    default_message = "名称无效：请输入 1–64 个字符，不能只包含空格。"


class DocumentNotFound(KnowledgeBaseError):
    default_message = "找不到这个文档。"


# --- models ---------------------------------------------------------------------------------
class ModelLoadError(WendaoError):
    default_message = "模型加载失败。"


class IndexLocked(WendaoError):
    default_message = ("索引正被另一个进程使用（例如正在运行的网页应用或另一个命令行）。请关闭它后重试；"
                       "需要多个进程同时读写时，请使用 Qdrant 服务器（设置 QDRANT_URL）。")


class DataDirBusy(IndexLocked):
    """Another live process owns the data directory (services.index.ownership); nothing was changed."""

    default_message = ("数据目录正被另一个进程使用（例如正在运行的网页应用），本操作需要写入，因此未做任何修改。"
                       "请在网页应用中操作，或关闭它后重试。")


class StorageError(WendaoError):
    """The data dir's disk cannot take a write (full, read-only, no permission); nothing was changed.
    Reading keeps working (services.index.storage, services.index.library.Library)."""

    default_message = "数据目录所在的磁盘无法写入，本次操作未做任何修改。"


class DiskFull(StorageError):
    """Too little free space for a write: says about how much more is needed."""

    def __init__(self, message_zh: str | None = None, needed_bytes: int | None = None, free_bytes: int | None = None):
        if message_zh is None:
            mb = 1024 * 1024
            more = f"还需约 {max(1, -(-int(needed_bytes or 0) // mb))} MB" if needed_bytes else "已没有剩余空间"
            free = f"（数据目录所在磁盘剩余 {int(free_bytes) // mb} MB）" if free_bytes is not None else ""
            message_zh = (f"磁盘空间不足：{more}{free}。本次操作未做任何修改，已有的知识库照常可以查询；"
                          "请清理磁盘后重试。")
        self.needed_bytes = needed_bytes
        super().__init__(message_zh)


class ReadOnlyStorage(StorageError):
    default_message = ("数据目录所在的磁盘是只读的（或没有写入权限）：可以查询，但不能导入、删除或修改。"
                       "本次操作未做任何修改。")


def storage_error(exc: BaseException, free_bytes: int | None = None) -> StorageError | None:
    """The typed error for a failed write caused by the disk — OSError ENOSPC/EDQUOT (full), EROFS
    (read-only), SQLite's 'database or disk is full' and 'attempt to write a readonly database' — or
    None when `exc` is something else. (Duck-typed: this module imports nothing.)"""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:  # the disk error may be the cause of a wrapper
        seen.add(id(exc))
        if isinstance(exc, StorageError):
            return exc
        code = getattr(exc, "errno", None)
        if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return DiskFull(free_bytes=free_bytes)
        if code == errno.EROFS:
            return ReadOnlyStorage()
        sqlite_code = getattr(exc, "sqlite_errorcode", None)
        if sqlite_code is not None:
            primary = sqlite_code & 0xFF
            if primary == 13:  # SQLITE_FULL
                return DiskFull(free_bytes=free_bytes)
            if primary == 8:  # SQLITE_READONLY
                return ReadOnlyStorage()
        text = str(exc).lower()
        if "no space left on device" in text or "database or disk is full" in text or "os error 28" in text:
            return DiskFull(free_bytes=free_bytes)
        if "read-only file system" in text or "readonly database" in text or "os error 30" in text:
            return ReadOnlyStorage()
        exc = exc.__cause__ or exc.__context__
    return None
class ModelServerError(ModelLoadError):
    """A model server (OpenAI-compatible /embeddings, a /rerank endpoint) could not be used."""

    default_message = "模型服务调用失败。"


class ModelServerUnreachable(ModelServerError):
    default_message = "无法连接到模型服务，请检查接口地址是否正确、服务是否已启动。"


class ModelServerAuth(ModelServerError):
    default_message = "模型服务拒绝了 API Key（401/403），请检查密钥是否正确。"


class ModelNotServed(ModelServerError):
    default_message = "模型服务没有提供这个模型，请检查模型名称。"


class ModelServerTimeout(ModelServerError):
    default_message = "模型服务响应超时（重试后仍失败），请稍后再试或调大超时时间。"


class ModelServerBadResponse(ModelServerError):
    default_message = "模型服务的返回内容不符合预期（例如向量维度不对）。"


class IndexMismatch(WendaoError):
    default_message = "索引与知识库记录不一致（向量模型或维度不同）。请在文档库中“重建索引”。"


class InvalidQuestionFile(WendaoError):
    default_message = "问题文件格式不正确：每行应是一个 JSON 对象，至少包含 question 字段。"


# --- LLM ------------------------------------------------------------------------------------
class LLMError(WendaoError):
    default_message = "调用大模型失败。"


class LLMNotConfigured(LLMError):
    default_message = "尚未配置大模型（请在设置页填写接口地址和模型名）。"


class LLMAuthError(LLMError):
    default_message = "大模型接口拒绝了 API Key（401/403），请检查密钥是否正确。"


class LLMModelNotFound(LLMError):
    default_message = "大模型接口找不到这个模型（404），请检查模型名称。"


class LLMUnreachable(LLMError):
    default_message = "无法连接到大模型接口，请检查地址是否正确、服务是否已启动。"


class LLMRateLimited(LLMError):
    default_message = "大模型接口请求过于频繁（429），重试后仍失败，请稍后再试。"


class LLMServerError(LLMError):
    default_message = "大模型接口出错（5xx），重试后仍失败，请稍后再试。"


class LLMRequestRejected(LLMError):
    """The endpoint answered with an HTTP error that a retry does not fix (405, 400, 415, 422, other
    4xx): usually a wrong address or a service without /chat/completions."""

    default_message = "大模型接口拒绝了请求。请检查接口地址和模型名。"


class LLMTimeout(LLMError):
    default_message = "大模型接口响应超时，请稍后再试或调大超时时间。"


class LLMContextTooLong(LLMError):
    default_message = "输入超过了模型的上下文长度，请减少检索片段数量或换用上下文更长的模型。"


class QueryTooLong(WendaoError):
    """A question or search query longer than the core takes (services.workspace.MAX_QUERY_CHARS)."""

    default_message = "问题太长，请精简后再试。"


class ConversationNotFound(WendaoError):
    default_message = "找不到这个对话（可能已被删除）。"


class JobNotFound(WendaoError):
    default_message = "找不到这个任务。"


class PermissionDenied(WendaoError):
    """The principal (user or API key) may not do this; nothing was read or changed."""

    default_message = "没有权限执行这个操作。"


class NotSignedIn(PermissionDenied):
    default_message = "请先登录。"


class SignInFailed(PermissionDenied):
    default_message = "用户名或密码不正确。"


class TooManyUploads(WendaoError):
    """More uploads in flight (queued or being indexed) for one API key or one user than allowed
    (WENDAO_MAX_UPLOADS_PER_KEY / WENDAO_MAX_UPLOADS_PER_USER); HTTP 429 in the API."""

    default_message = "正在排队或索引的上传太多，请等前面的文件处理完再上传。"

    @classmethod
    def of(cls, tag: str, count: int, limit: int) -> "TooManyUploads":
        """The refusal for the uploads tagged `tag` ("k<id>" an API key's, "u<id>" a user's): `count` in
        flight, `limit` allowed."""
        whose = "这个 API 密钥" if tag[0] == "k" else "你"
        return cls(f"{whose}已有 {count} 个上传正在排队或索引（上限 {limit} 个），请等前面的文件处理完再上传。")


class SignInThrottled(PermissionDenied):
    default_message = "登录失败次数过多，请稍后再试。"


class InsecureBind(WendaoError):
    default_message = "拒绝启动：在网络地址上提供服务必须开启登录（WENDAO_AUTH=local 或 oidc）。"


class UnsafeEndpoint(WendaoError):
    """A model endpoint pointing at a link-local, metadata or (not allowed) loopback address."""

    default_message = "这个接口地址指向本机或内网的特殊地址，出于安全考虑不允许使用。"


class NeedsConfirmation(WendaoError):
    """An action advised against (a fine-tuned model measured worse) asked for without the user's
    explicit confirmation."""

    default_message = "这个操作需要先确认。"


class MalformedEndpoint(ModelServerError):
    """An endpoint address that is not a URL at all ("not a url", "127.0.0.1:7997" without http://)."""

    default_message = "接口地址格式不对：应是 http:// 或 https:// 开头的完整地址，例如 http://127.0.0.1:7997/v1。"


# --- one wording for endpoints (the LLM, embedding and rerank servers) -------------------------
def malformed_endpoint_zh(url: str, what: str = "接口") -> str:
    """Why `url` is not an endpoint address, in Chinese; "" when it is an http(s) URL with a host
    (whether anything answers there is another question)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit((url or "").strip())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in parts.netloc
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        ok = False
    if ok:
        return ""
    shown = (url or "").strip()[:80]
    return (f"{what}地址「{shown}」格式不对：应是 http:// 或 https:// 开头的完整地址，"
            "例如 http://127.0.0.1:7997/v1。" if shown else f"请填写{what}地址。")


def request_rejected_zh(what: str, status: int | None, api: str, where: str = "") -> str:
    """An endpoint that answered but refused the request (HTTP 400, 405, 415, 422, other 4xx), in the
    words the LLM's 「测试连接」 uses, for every kind of endpoint: `what` 大模型接口 / 向量模型服务 /
    重排模型服务, `api` the path it was asked for (/chat/completions, /embeddings, /rerank)."""
    head = f"{what} {where} 拒绝了请求（HTTP {status or 400}）" if where else f"{what}拒绝了请求（HTTP {status or 400}）"
    if status == 405:
        head += f"：这个地址不提供 {api} 接口"
    return (head + f"。请检查：接口地址是否正确（OpenAI 兼容服务通常以 /v1 结尾，例如 http://127.0.0.1:8080/v1）、"
            f"模型名是否正确、该服务是否支持 {api}。")
