// Streamlit's own words in Chinese: the page language (zh-CN, so Chrome does not offer to translate),
// and every English label, tooltip, placeholder and instruction the Streamlit frontend writes (the
// data-table toolbar, "Help for …", "Press Enter to …", "Skip to main content", number-input steps…).
// Loaded once per browser tab by components/widgets.py (st.html); a MutationObserver translates what
// React renders later. Only fixed Streamlit strings are matched: user text is never touched.
// Also (the one other fix of Streamlit's frontend): the uploader's file chips show the whole file name
// (Streamlit cuts it to ~25 characters, "2023年度上...附件.txt"; the full name is in the chip's title),
// with control and bidi characters as their code points, U+0007 in angle brackets, the way the document table, the
// pickers and the citations show them (services.documents.text.display_name; a chip drew a box).
// No less-than sign may appear in this file (write \x3c): st.html drops a script holding one that reads
// like a tag, such as the angle-bracketed code point above.
(function () {
  if (window.__wendaoZh) return;
  window.__wendaoZh = true;
  const EXACT = {
    "Skip to main content": "跳到正文",
    "Show/hide columns": "显示/隐藏列",
    "Download as CSV": "下载为 CSV",
    "Download as PNG": "下载为 PNG 图片",
    "Download as SVG": "下载为 SVG 图片",
    "Copy Vega-Lite spec": "复制图表定义",
    "Show data": "查看数据",
    "Search": "搜索",
    "Fullscreen": "全屏",
    "Close fullscreen": "退出全屏",
    "Exit fullscreen": "退出全屏",
    "Open": "展开",
    "Close": "关闭",
    "Sidebar": "侧边栏",
    "App pages": "页面导航",
    "Increment": "增加",
    "Decrement": "减少",
    "Link to heading": "链接到此标题",
    "Choose an option": "请选择",
    "Choose options": "请选择",
    "No options to select": "没有可选项",
    "No results": "没有结果",
    "Show password": "显示密码",
    "Hide password": "隐藏密码",
    "Clear all": "全部清除",
    "Clear value": "清除",
    "Clear": "清除",
    "Send message": "发送",
    "Help": "说明",
    "Press Enter to apply": "按回车键确认",
    "Press Enter to submit form": "按回车键提交",
    "Press Ctrl+Enter to apply": "按 Ctrl+回车键确认",
    "Press ⌘+Enter to apply": "按 ⌘+回车键确认",
    "Press Ctrl+Enter to submit form": "按 Ctrl+回车键提交",
    "Press ⌘+Enter to submit form": "按 ⌘+回车键提交",
    "Vega visualization": "图表",
    "Upload": "选择文件",
    "file upload": "上传文件",
    "Browse files": "选择文件",
    "Drag and drop file here": "把文件拖到这里",
    "Drag and drop files here": "把文件拖到这里",
    "Delete": "删除",
    "Remove": "移除",
    "Copy to clipboard": "复制",
    "Copied": "已复制",
    "Page not found": "页面不存在",
    "The page that you have requested does not seem to exist. Running the app's main page.":
      "所请求的页面不存在，已打开首页。",
    "Running...": "运行中…",
    "Stop": "停止",
    "Loading...": "加载中…",
    "Select all": "全选",
    "Clear selection": "清除选择",
    "Sort ascending": "升序排列",
    "Sort descending": "降序排列",
    "Autosize": "自动列宽",
    "Pin column": "固定此列",
    "Unpin column": "取消固定",
    "Hide column": "隐藏此列",
    "Format": "格式",
    "Add files": "添加文件",
    "add icon": "添加文件",  // the uploader's + button, read to screen readers (Streamlit names icons so)
    "Close Search": "关闭搜索",
    "Collapse sidebar": "收起侧边栏",
    "Expand sidebar": "展开侧边栏",
    "Copy column name": "复制列名",
    "Dataframe column menu": "列菜单",
    "Main menu": "主菜单",
    "Markdown content": "文字内容",
    "Navigate to home page": "回到首页",
    "Next Result": "下一个结果",
    "Previous Result": "上一个结果",
    "Next page": "下一页",
    "Previous page": "上一页",
    "Pagination": "分页",
    "Notifications": "通知",
    "Scroll tabs left": "标签向左滚动",
    "Scroll tabs right": "标签向右滚动",
    "Selected values": "已选的值",
    "Stop script": "停止运行",
    "Clear entry": "清除",
    "Theme": "主题",
    "Button action menu": "按钮菜单",
    "Feedback rating": "评价",
  };
  // Words around a name ("Remove 报告.pdf"): only in attributes, where Streamlit writes them; a text node
  // of that shape is the user's (a file named "Remove me.txt" in the document table stays as it is).
  const ATTRIBUTE_PATTERNS = [
    [/^Help for (.+)$/s, "$1：说明"],
    [/^Remove (.+)$/s, "移除 $1"],
    [/^Delete (.+)$/s, "删除 $1"],
    [/^Chat message from user$/s, "你的提问"],
    [/^Chat message from assistant$/s, "回答"],
    [/^Chat message from (.+)$/s, "$1 的消息"],
    [/^Upload (.+)$/s, "上传 $1"],
    [/^Page (\d+)$/s, "第 $1 页"],
    [/^Cancel upload of (.+)$/s, "取消上传 $1"],
  ];
  const PATTERNS = [
    [/^(\d+(?:\.\d+)?)\s*([KMG]B) per file(.*)$/s, "单个文件不超过 $1 $2$3"],
    [/^File must be (.+) or smaller\.$/s, "文件不能超过 $1"],  // a chip's error (over the size limit)
    [/^Unexpected error\. Please try again\.$/s, "出错了，请重试。"],
  ];
  function zh(value, attribute) {
    if (!value) return null;
    const key = value.trim();
    if (Object.prototype.hasOwnProperty.call(EXACT, key)) return value.replace(key, EXACT[key]);
    for (const [pattern, replacement] of attribute ? ATTRIBUTE_PATTERNS.concat(PATTERNS) : PATTERNS) {
      if (pattern.test(key)) return value.replace(key, key.replace(pattern, replacement));
    }
    return null;
  }
  const ATTRIBUTES = ["aria-label", "title", "placeholder", "alt"];
  const SKIP = new Set(["SCRIPT", "STYLE", "TEXTAREA", "CODE", "PRE"]);
  // A chip's size ("0.6KB", "43.0B") written as the document table writes it (services.documents.doctypes.
  // format_size: "0.6 KB", "43 B"), so the two read the same.
  const CHIP_SIZE = /^(\d+(?:\.\d+)?)(B|KB|MB|GB)$/;
  function chipSize(node, parent) {
    if (!parent.closest("[data-testid='stFileChip']") || parent.closest("[data-testid='stFileChipName']")) return false;
    const m = CHIP_SIZE.exec(node.nodeValue.trim());
    if (!m) return false;
    const shown = m[2] === "B" ? String(Math.round(Number(m[1]))) + " B" : m[1] + " " + m[2];
    if (node.nodeValue !== shown) node.nodeValue = shown;
    return true;
  }
  function fixText(node) {
    const parent = node.parentElement;
    if (!parent || SKIP.has(parent.tagName) || parent.isContentEditable) return;
    if (chipSize(node, parent)) return;
    // documents' text and names: passages, answers, chips, the tables' cells (what screen readers read)
    if (parent.closest(".wendao-passage, [data-testid='stChatMessage'] .stMarkdown, [data-testid='stFileChipName'], "
                       + "[data-testid='stDataFrame'] td")) return;
    const out = zh(node.nodeValue);
    if (out !== null && out !== node.nodeValue) node.nodeValue = out;
  }
  function fixAttributes(el) {
    // a chip's file name is the user's ("Remove me.txt" stays), only made visible (React may set it again)
    if (el.matches && el.matches("[data-testid='stFileChipName']")) return wholeFileName(el);
    for (const name of ATTRIBUTES) {
      const value = el.getAttribute && el.getAttribute(name);
      if (value) {
        const out = zh(value, true);
        if (out !== null && out !== value) el.setAttribute(name, out);
      }
    }
  }
  // services.documents.text.display_name: C0/C1 controls, bidi embeddings, overrides, isolates and
  // marks, and the line/paragraph separators, as U+XXXX in angle brackets.
  const UNSEEN = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u2028\u2029]/g;
  function visibleName(name) {
    return name.replace(UNSEEN, ch => "\x3cU+" + ch.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + ">");
  }
  function wholeFileName(el) {
    const full = el.getAttribute("title"), text = el.firstChild;
    if (!full) return;
    const shown = visibleName(full);
    if (shown !== full) el.setAttribute("title", shown);  // the tooltip too (an override reversed it)
    if (el.childNodes.length === 1 && text.nodeType === Node.TEXT_NODE && text.nodeValue !== shown) {
      text.nodeValue = shown;  // the same text node React rendered: React keeps managing it
    }
  }
  function fixTree(root) {
    if (root.nodeType === Node.TEXT_NODE) return fixText(root);
    if (root.nodeType !== Node.ELEMENT_NODE) return;
    if (root.matches("[data-testid='stFileChipName']")) wholeFileName(root);
    for (const el of root.querySelectorAll("[data-testid='stFileChipName']")) wholeFileName(el);
    fixAttributes(root);
    for (const el of root.querySelectorAll("[aria-label], [title], [placeholder], [alt]")) fixAttributes(el);
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) fixText(walker.currentNode);
  }
  document.documentElement.lang = "zh-CN";
  fixTree(document.body);
  new MutationObserver(function (records) {
    if (document.documentElement.lang !== "zh-CN") document.documentElement.lang = "zh-CN";
    for (const r of records) {
      if (r.type === "characterData") {
        fixText(r.target);
        const chip = r.target.parentElement;
        if (chip && chip.matches("[data-testid='stFileChipName']")) wholeFileName(chip);
      }
      else if (r.type === "attributes") fixAttributes(r.target);
      else r.addedNodes.forEach(fixTree);
    }
  }).observe(document.documentElement, {subtree: true, childList: true, characterData: true,
                                        attributes: true, attributeFilter: ATTRIBUTES.concat(["lang"])});
})();
