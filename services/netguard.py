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

import httpx

from services import errors

METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.internal"}


def private_allowed() -> bool:
    return os.environ.get("WENDAO_ALLOW_PRIVATE_ENDPOINTS", "").strip().lower() in ("1", "true", "yes")


def check_endpoint(url: str, allow_private: bool | None = None) -> None:
    """Raise UnsafeEndpoint unless `url` is an http(s) URL whose host resolves only to addresses the
    server may call for a visitor."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.UnsafeEndpoint("接口地址必须是 http:// 或 https:// 开头的完整地址。")
    vetted_addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow_private)


def vetted_addresses(host: str, port: int, allow_private: bool | None = None) -> list[str]:
    """The addresses `host` resolves to, after checking every one of them (UnsafeEndpoint otherwise)."""
    allow_private = private_allowed() if allow_private is None else allow_private
    host = host.lower().rstrip(".").strip("[]")
    if host in METADATA_HOSTS:
        raise errors.UnsafeEndpoint("接口地址指向云主机的元数据服务，出于安全考虑不允许使用。")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise errors.LLMUnreachable(f"无法解析接口地址的主机名「{host}」。") from None
    out = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        for seen in (address, embedded_ipv4(address)):
            if seen is None:
                continue
            if seen.is_link_local or seen.is_multicast or seen.is_unspecified or seen.is_reserved \
                    or str(seen) in ("100.100.100.200", "fd00:ec2::254"):
                raise errors.UnsafeEndpoint(f"接口地址解析到链路本地或元数据地址（{address}），出于安全考虑不允许使用。")
            # not global: loopback, private networks, and the other ranges no public server has
            # (100.64.0.0/10 shared address space: carrier NAT, Tailscale, cloud-internal services)
            if (seen.is_loopback or seen.is_private or not seen.is_global) and not allow_private:
                raise errors.UnsafeEndpoint(
                    f"接口地址解析到本机或内网地址（{address}）。团队模式下只有管理员允许后"
                    "（服务器设置 WENDAO_ALLOW_PRIVATE_ENDPOINTS=1）才能使用，或请管理员在服务器上配置该接口。")
        out.append(str(address))
    return out


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to where the network translates or tunnels it (mapped
    ::ffff:a.b.c.d, compatible ::a.b.c.d, 6to4, Teredo, NAT64 64:ff9b::a.b.c.d), else None: an
    IPv6 address that is "global" by itself may still reach 169.254.169.254 or 127.0.0.1 that way."""
    if address.version != 6:
        return None
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if any(address in net for net in NAT64) or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def guarded(base_url: str) -> bool:
    """Whether requests to `base_url` must pass the guard when they are made: in team mode, for every
    endpoint except the ones the operator configured for the server (environment, secrets)."""
    from services.config import LLMSettings, same_endpoint, server_endpoints, server_llm_secrets, team_mode

    if not team_mode():
        return False
    own = [*server_endpoints(), server_llm_secrets().get("base_url", ""), LLMSettings.from_env().base_url]
    return not any(u and same_endpoint(base_url, u) for u in own)


def outbound_proxy(url: str = "") -> str | None:
    """The proxy model calls go through: WENDAO_OUTBOUND_PROXY (the operator's explicit choice), except
    for hosts NO_PROXY names; None without it. HTTPS_PROXY / HTTP_PROXY / ALL_PROXY are never used: set
    for other programs, they would send every question, passage and key through a proxy this server
    never chose, and the proxy, resolving the name itself, would bypass the address checks below."""
    import urllib.request

    proxy = os.environ.get("WENDAO_OUTBOUND_PROXY", "").strip()
    host = urlsplit(url).hostname or ""
    if not proxy or (host and urllib.request.proxy_bypass_environment(host)):
        return None
    return proxy


def http_client(base_url: str, timeout=None) -> httpx.Client:
    """The httpx client for calls to a model endpoint (LLM, embeddings, rerank). Proxy variables of the
    environment and ~/.netrc are ignored (`trust_env=False`); WENDAO_OUTBOUND_PROXY, when set, is the
    proxy. Where `guarded` says so (visitor-chosen endpoints in team mode), every request, redirects
    included, goes only to an address checked at that moment, so neither a redirect nor a DNS answer
    that changes after `check_endpoint` (DNS rebinding) reaches link-local, metadata or (unless
    allowed) internal addresses; through the proxy too (the target's name is resolved and checked here
    first; plain HTTP goes to the checked address, HTTPS by name, which the proxy resolves again)."""
    proxy = outbound_proxy(base_url)
    if guarded(base_url):
        return httpx.Client(transport=GuardedTransport(proxy=proxy), timeout=timeout, follow_redirects=False,
                            trust_env=False)
    return httpx.Client(transport=httpx.HTTPTransport(proxy=proxy), timeout=timeout, follow_redirects=True,
                        trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport that resolves each request's host once, checks every address, and connects to
    the checked one (the Host header and the TLS server name stay the host name)."""

    def __init__(self, proxy: str | None = None, **kwargs):
        super().__init__(proxy=proxy, **kwargs)
        self.proxied = proxy is not None

    def handle_request(self, request):
        url = request.url
        addresses = vetted_addresses(url.host, url.port or (443 if url.scheme == "https" else 80))
        if self.proxied and url.scheme == "https":
            pass  # a tunnel to an address would present it as the TLS server name: sent by name, checked above
        elif addresses and addresses[0] != url.host:
            if url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": url.host}
            request.url = url.copy_with(host=addresses[0])
        return super().handle_request(request)
