"""README.md stays true: the two commands, every environment variable the code reads (with its real
default), only variables that exist, curl examples for routes the app really has, working links."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from service.settings import Settings
from trainer import device as trainer_device
from worker.settings import WorkerSettings

ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|([^|]*)\|\s*$")
# Files where a documented variable may be read; README and tests do not count.
SOURCES = [
    "contract",
    "store",
    "trainer",
    "worker",
    "service",
    "scripts",
    "Makefile",
    "docker-compose.yml",
    "Dockerfile",
]


@pytest.fixture(scope="module")
def readme(repo: Path) -> str:
    return (repo / "README.md").read_text()


@pytest.fixture(scope="module")
def table(readme: str) -> dict[str, tuple[str, str]]:
    """{VARIABLE: (default cell, meaning cell)} from the configuration table."""
    rows = {}
    for line in readme.splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} documented twice"
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def env_names(cls: type[BaseSettings]) -> dict[str, object]:
    """{environment variable: default} for every field of a pydantic-settings class."""
    prefix = cls.model_config.get("env_prefix", "")
    out = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            env = str(alias.choices[0])
        elif isinstance(alias, str):
            env = alias
        else:
            env = prefix + name
        out[env.upper()] = field.default
    return out


def test_the_two_commands_and_docker(readme):
    assert "make run" in readme and "make test" in readme
    assert "docker compose up" in readme
    assert "docker compose -f docker-compose.yml -f docker-compose.gpu.yml up" in readme


def test_env_name_introspection_on_a_known_class():
    from pydantic import Field
    from pydantic_settings import SettingsConfigDict

    class Known(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="X_")
        a: int = 3
        b: str = Field("h", validation_alias=AliasChoices("PLAIN", "b"))

    assert env_names(Known) == {"X_A": 3, "PLAIN": "h"}


@pytest.mark.parametrize("cls", [Settings, WorkerSettings], ids=lambda c: c.__name__)
def test_every_setting_is_documented_with_its_default(table, cls):
    for env, default in env_names(cls).items():
        assert env in table, f"{env} ({cls.__name__}) is missing from the README table"
        cell = table[env][0]
        if isinstance(default, bool):
            assert f"`{str(default).lower()}`" in cell, (env, default, cell)
        elif isinstance(default, int | float | str):
            assert f"`{default}`" in cell, (env, default, cell)
        elif isinstance(default, Path):
            assert f"{default}`" in cell, (env, default, cell)
        else:
            assert default is None
            assert "unset" in cell or "$SPECREC_HOME" in cell or "clamped" in cell, (env, cell)


def test_trainer_device_variable_is_documented(table):
    assert trainer_device.ENV_VAR in table


def test_every_documented_variable_is_read_somewhere(repo, table):
    texts = []
    for src in SOURCES:
        path = repo / src
        files = path.rglob("*") if path.is_dir() else [path]
        texts += [
            f.read_text() for f in files if f.is_file() and f.suffix in ("", ".py", ".sh", ".yml")
        ]
    code = "\n".join(texts)
    declared = set(env_names(Settings)) | set(env_names(WorkerSettings))
    for env in table:
        assert env in declared or env in code, f"README documents {env}, which nothing reads"


def _curl_calls(readme: str) -> list[tuple[str, str, bool]]:
    """(METHOD, path, sends a bearer token) of every curl command in the README, continuation
    lines joined."""
    text = readme.replace("\\\n", " ")
    calls = []
    for line in text.splitlines():
        if not line.lstrip().startswith("curl "):
            continue
        args = shlex.split(line.split("#")[0])
        method = "GET"
        if "-X" in args:
            method = args[args.index("-X") + 1]
        elif any(a in args for a in ("-d", "--data", "--json")):
            method = "POST"
        (url,) = [a for a in args if re.match(r"(https?://)?(127\.0\.0\.1|localhost)", a)]
        token = any(a.startswith("Authorization: Bearer ") for a in args)
        calls.append((method, urlsplit(url if "://" in url else f"http://{url}").path, token))
    return calls


def test_curl_parser_on_known_lines():
    text = "curl '127.0.0.1:1/a?k=2'  # note\n"
    text += "curl -X POST 127.0.0.1:8000/b/<v>/c -H 'Authorization: Bearer $T'\n"
    text += "curl localhost:1/x \\\n  -d '{}'\n"
    assert _curl_calls(text) == [
        ("GET", "/a", False),
        ("POST", "/b/<v>/c", True),
        ("POST", "/x", False),
    ]


def _app_routes() -> dict[tuple[str, str], bool]:
    """{(METHOD, path template): needs a bearer token} for every operation in the app's
    OpenAPI schema."""
    from service.app import create_app

    app = create_app(Settings(home=Path("/nonexistent-specrec-home"), watch=False))
    paths = app.openapi()["paths"]
    return {
        (method.upper(), path): bool(op.get("security"))
        for path, ops in paths.items()
        for method, op in ops.items()
    }


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
    return re.fullmatch(pattern, path) is not None


def test_curl_examples_cover_exactly_the_apps_routes(readme):
    routes = _app_routes()
    calls = _curl_calls(readme)
    for method, path, _ in calls:
        assert any(m == method and _matches(t, path) for m, t in routes), (
            f"README: curl {method} {path} matches no route of the app"
        )
    for method, template in routes:
        assert any(m == method and _matches(template, p) for m, p, _ in calls), (
            f"the app's {method} {template} has no curl example in the README"
        )


def test_curl_examples_send_the_token_exactly_where_the_app_requires_one(readme):
    routes = _app_routes()
    assert any(routes.values()), "expected admin endpoints in the OpenAPI schema"
    for method, path, sends_token in _curl_calls(readme):
        needs = [auth for (m, t), auth in routes.items() if m == method and _matches(t, path)]
        assert needs == [sends_token], f"curl {method} {path}: token {sends_token}, app {needs}"


def test_relative_links_resolve(repo, readme):
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    local = [link for link in links if "://" not in link]
    assert local, "expected at least the link to docs/benchmarks.md"
    for link in local:
        assert (repo / link).exists(), f"README links to missing {link}"
