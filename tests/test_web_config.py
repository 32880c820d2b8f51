"""--web.config.file: TLS (with client certificates), basic auth with bcrypt, headers, reload and errors.

The exporter runs in process through ``server.serve`` (the code path of the real command) on a loopback port,
with a throwaway CA from trustme.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from exporter import cli, server
from exporter.config import ConfigError
from exporter.runtime import Runtime
from exporter.web.webconfig import Credentials, load_web_config
from tests.helpers.exporter_proc import free_port
from tests.servers.http import PKI, make_pki

PASSWORD = "s3cret-scrape-pass"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass
class Running:
    url: str
    runtime: Runtime
    web_config: Path

    @property
    def credentials(self) -> Credentials:
        return self.runtime.reload_hooks[0].__self__.credentials  # type: ignore[attr-defined]


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path)


def tls_files(pki: PKI, tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    pki.valid.cert_chain_pems[0].write_to_path(str(cert))
    pki.valid.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def web_yaml(pki: PKI, tmp_path: Path, *, client_auth: str = "NoClientCert", users: str = "") -> str:
    cert, key = tls_files(pki, tmp_path)
    return textwrap.dedent(f"""
        tls_server_config:
          cert_file: {cert}
          key_file: {key}
          client_auth_type: {client_auth}
          client_ca_file: {pki.ca_file}
          min_version: TLS12
        http_server_config:
          headers: {{Strict-Transport-Security: max-age=31536000, X-Frame-Options: deny}}
        basic_auth_users:
          prometheus: "{HASH}"
          {users}
    """)


@asynccontextmanager
async def running(tmp_path: Path, web: str) -> AsyncIterator[Running]:
    config = tmp_path / "c.yml"
    config.write_text('modules: {http_2xx: {prober: http}}\nregions: [{name: lab, resolvers: ["127.0.0.1:1"]}]\n')
    web_config = tmp_path / "web.yml"
    web_config.write_text(web)
    port = free_port()
    runtime = Runtime(str(config))
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(str(config), ("127.0.0.1", port), runtime=runtime, stop_event=stop,
                                         web_config_file=str(web_config)))
    for _ in range(200):
        if task.done():
            task.result()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    try:
        yield Running(f"https://127.0.0.1:{port}", runtime, web_config)
    finally:
        stop.set()
        assert await task == 0


def client_context(pki: PKI, *, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    if client_cert:
        ctx.load_cert_chain(pki.client_cert_file, pki.client_key_file)
    return ctx


async def get(url: str, ctx: ssl.SSLContext | None, *, auth: tuple[str, str] | None = None,
              method: str = "GET") -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()} if auth else {}
    async with aiohttp.ClientSession() as session, session.request(method, url, ssl=ctx, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_https_basic_auth_headers_and_open_health(tmp_path: Path, pki: PKI) -> None:
    async with running(tmp_path, web_yaml(pki, tmp_path)) as ex:
        ctx = client_context(pki)
        status, headers, _ = await get(ex.url + "/metrics", ctx)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="outage-exporter", charset="UTF-8"'
        assert headers["Strict-Transport-Security"] == "max-age=31536000"  # on refusals too
        assert (await get(ex.url + "/metrics", ctx, auth=("prometheus", "wrong")))[0] == 401
        assert (await get(ex.url + "/metrics", ctx, auth=("nobody", PASSWORD)))[0] == 401
        for path in ("/", "/config", "/probe?target=http://127.0.0.1:1/", "/-/ready"):
            assert (await get(ex.url + path, ctx))[0] == 401, path
        status, headers, body = await get(ex.url + "/-/healthy", ctx)
        assert (status, body) == (200, "Healthy\n")
        assert headers["X-Frame-Options"] == "deny"
        checks_before = ex.credentials.bcrypt_checks
        for _ in range(3):
            status, _, body = await get(ex.url + "/metrics", ctx, auth=("prometheus", PASSWORD))
            assert status == 200 and "outage_exporter_build_info" in body
        assert ex.credentials.bcrypt_checks == checks_before + 1  # verified once, then remembered
        assert "outage_exporter_web_config_last_reload_successful 1.0" in body
        # /-/reload: POST only, and behind the credentials like everything else
        assert (await get(ex.url + "/-/reload", ctx, auth=("prometheus", PASSWORD)))[0] == 405
        assert (await get(ex.url + "/-/reload", ctx, method="POST"))[0] == 401
        assert (await get(ex.url + "/-/reload", ctx, auth=("prometheus", PASSWORD), method="POST"))[0] == 200


async def test_plain_http_is_refused_on_a_tls_listener(tmp_path: Path, pki: PKI) -> None:
    async with running(tmp_path, web_yaml(pki, tmp_path)) as ex:
        with pytest.raises(aiohttp.ClientError):
            await get(ex.url.replace("https://", "http://") + "/-/healthy", None)
        assert (await get(ex.url + "/-/healthy", client_context(pki)))[0] == 200


async def test_client_certificate_required_when_configured(tmp_path: Path, pki: PKI) -> None:
    async with running(tmp_path, web_yaml(pki, tmp_path, client_auth="RequireAndVerifyClientCert")) as ex:
        with pytest.raises(aiohttp.ClientError):
            await get(ex.url + "/-/healthy", client_context(pki))
        status, _, _ = await get(ex.url + "/metrics", client_context(pki, client_cert=True),
                                 auth=("prometheus", PASSWORD))
        assert status == 200


async def test_reload_swaps_users_and_refuses_tls_changes(tmp_path: Path, pki: PKI) -> None:
    other = bcrypt.hashpw(b"second-pass", bcrypt.gensalt(rounds=4)).decode()
    async with running(tmp_path, web_yaml(pki, tmp_path)) as ex:
        ctx, auth = client_context(pki), ("prometheus", PASSWORD)
        assert (await get(ex.url + "/metrics", ctx, auth=auth))[0] == 200
        ex.web_config.write_text(web_yaml(pki, tmp_path).replace(HASH, other))
        assert (await ex.runtime.reload())[0]
        assert (await get(ex.url + "/metrics", ctx, auth=auth))[0] == 401  # the cache went with the old users
        assert (await get(ex.url + "/metrics", ctx, auth=("prometheus", "second-pass")))[0] == 200

        ex.web_config.write_text(web_yaml(pki, tmp_path).replace("TLS12", "TLS13"))
        await ex.runtime.reload()
        status, _, body = await get(ex.url + "/metrics", ctx, auth=("prometheus", "second-pass"))
        assert status == 200  # the previous web config stays in force
        assert "outage_exporter_web_config_last_reload_successful 0.0" in body


WEB_ERRORS = [
    ("tls_server_config: {cert_file: CERT, key_file: KEY, min_verison: TLS12}",
     'tls_server_config.min_verison: unknown key "min_verison"; did you mean "min_version"?'),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: RequireAnyClientCert, "
     "client_ca_file: CA}", 'tls_server_config.client_auth_type: "RequireAnyClientCert" is not supported'),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: RequireAndVerifyClientCert}",
     "tls_server_config.client_ca_file: required with client_auth_type RequireAndVerifyClientCert"),
    ("tls_server_config: {cert_file: /nonexistent.pem, key_file: KEY}",
     "tls_server_config.cert_file: cannot read /nonexistent.pem"),
    ("tls_server_config: {cert_file: KEY, key_file: CERT}", "tls_server_config: cannot load cert_file"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, curve_preferences: [X25519]}",
     'tls_server_config.curve_preferences: blackbox_exporter option "curve_preferences" is not supported'),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, cipher_suites: [TLS_FOO]}",
     'tls_server_config.cipher_suites[0]: invalid value "TLS_FOO"'),
    ("http_server_config: {headers: {Server: x}}", 'http_server_config.headers.Server: header "Server" cannot'),
    ("http_server_config: {headers: {X-Content-Type-Options: sniff}}",
     'http_server_config.headers.X-Content-Type-Options: invalid value "sniff" (allowed: nosniff)'),
    ("basic_auth_users: {alice: hunter2}", "basic_auth_users.alice: expected a bcrypt hash"),
    ("basic_auth_user: {alice: x}", 'basic_auth_user: unknown key "basic_auth_user"; did you mean "basic_auth_users"?'),
]


@pytest.mark.parametrize(("text", "message"), WEB_ERRORS)
def test_web_config_errors_name_the_yaml_path(tmp_path: Path, pki: PKI, text: str, message: str) -> None:
    cert, key = tls_files(pki, tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(text.replace("CERT", cert).replace("KEY", key).replace("CA", pki.ca_file))
    with pytest.raises(ConfigError) as err:
        load_web_config(path)
    assert str(err.value).startswith(message), str(err.value)
    assert "hunter2" not in str(err.value)


def test_startup_with_a_bad_web_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yml"
    config.write_text("modules: {http_2xx: {prober: http}}\n")
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {alice: hunter2}\n")
    code = cli.main(["--config.file", str(config), "--web.listen-address", f"127.0.0.1:{free_port()}",
                     "--web.config.file", str(web)])
    assert code == 1
    assert f"--web.config.file {web}: basic_auth_users.alice: expected a bcrypt hash" in capsys.readouterr().err


async def test_unknown_users_cost_a_bcrypt_check_too() -> None:
    credentials = Credentials({"prometheus": HASH.encode()})
    assert not await credentials.verify("mallory", PASSWORD)
    assert not await credentials.verify("prometheus", "x" * 100)  # beyond bcrypt's 72 bytes: refused, no crash
    assert credentials.bcrypt_checks == 2
    assert await credentials.verify("prometheus", PASSWORD)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
async def test_a_web_config_that_is_no_regular_file_never_stalls_a_reload(tmp_path: Path, pki: PKI,
                                                                          kind: str) -> None:
    async with running(tmp_path, web_yaml(pki, tmp_path)) as ex:
        ctx, auth = client_context(pki), ("prometheus", PASSWORD)
        ex.web_config.unlink()
        if kind == "fifo":
            os.mkfifo(ex.web_config)  # no writer ever comes
        elif kind == "dev-zero":
            ex.web_config.symlink_to("/dev/zero")
        else:
            ex.web_config.write_bytes(b"#" * (2 << 20))
        reload = asyncio.create_task(ex.runtime.reload())
        status, _, body = await asyncio.wait_for(get(ex.url + "/metrics", ctx, auth=auth), timeout=5)
        assert status == 200
        await asyncio.wait_for(reload, timeout=5)
        body = (await get(ex.url + "/metrics", ctx, auth=auth))[2]
        assert "outage_exporter_web_config_last_reload_successful 0.0" in body


def test_web_config_errors_for_files_that_are_not_regular(tmp_path: Path) -> None:
    fifo = tmp_path / "web.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"cannot read web config file .*web.yml: not a regular file"):
        load_web_config(fifo)
