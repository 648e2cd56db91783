"""Where the server may send requests on a visitor's behalf (model endpoints typed in a browser).

A KB's LLM or model endpoint is a URL the server connects to, so a visitor could make it request
internal addresses (server-side request forgery). In team mode such URLs must not resolve to
link-local or cloud-metadata addresses, nor to loopback / private networks unless the operator allows
it (`WENDAO_ALLOW_PRIVATE_ENDPOINTS=1`, for a model server on the same host or LAN). The endpoint the
server itself is configured with (environment, secrets) is trusted as the operator's choice.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

from services import errors

METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.internal"}


def private_allowed() -> bool:
    return os.environ.get("WENDAO_ALLOW_PRIVATE_ENDPOINTS", "").strip().lower() in ("1", "true", "yes")


def check_endpoint(url: str, allow_private: bool | None = None) -> None:
    """Raise UnsafeEndpoint unless `url` is an http(s) URL whose host resolves only to addresses the
    server may call for a visitor."""
    allow_private = private_allowed() if allow_private is None else allow_private
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.UnsafeEndpoint("接口地址必须是 http:// 或 https:// 开头的完整地址。")
    host = parts.hostname.lower().rstrip(".")
    if host in METADATA_HOSTS:
        raise errors.UnsafeEndpoint("接口地址指向云主机的元数据服务，出于安全考虑不允许使用。")
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise errors.LLMUnreachable(f"无法解析接口地址的主机名「{host}」。") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved \
                or str(address) in ("100.100.100.200", "fd00:ec2::254"):
            raise errors.UnsafeEndpoint(f"接口地址解析到链路本地或元数据地址（{address}），出于安全考虑不允许使用。")
        if (address.is_loopback or address.is_private) and not allow_private:
            raise errors.UnsafeEndpoint(
                f"接口地址解析到本机或内网地址（{address}）。团队模式下只有管理员允许后"
                "（服务器设置 WENDAO_ALLOW_PRIVATE_ENDPOINTS=1）才能使用，或请管理员在服务器上配置该接口。")
