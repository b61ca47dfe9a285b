"""Dockerfile and .dockerignore, parsed: multi-stage, slim non-root runtime with a health check,
CPU torch by default and a GPU target, nothing secret baked in, a build context that holds only
what the image copies."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL", re.I)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, args)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instr, _, args = line.partition(" ")
        instr, args = instr.upper(), args.strip()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            assert m, f"unparsable FROM: {line}"
            stages.append(Stage(base=m.group(1), name=m.group(2) and m.group(2).lower()))
        elif not stages:
            assert instr == "ARG", f"{instr} before the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((instr, args))
    return global_args, stages


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the earlier stages it is built FROM, root first."""
    by_name = {s.name: s for s in stages if s.name}
    out = [stage]
    while out[0].base.lower() in by_name:
        out.insert(0, by_name[out[0].base.lower()])
    return out


def effective(stages: list[Stage], stage: Stage, instr: str) -> str | None:
    """The last value of `instr` that applies to `stage` (inherited through FROM <stage>)."""
    value = None
    for s in chain(stages, stage):
        for i, args in s.instructions:
            if i == instr:
                value = args
    return value


@pytest.fixture(scope="module")
def dockerfile(repo: Path) -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((repo / "Dockerfile").read_text())


def _stage(stages: list[Stage], name: str) -> Stage:
    (stage,) = [s for s in stages if s.name == name]
    return stage


def test_parser_on_a_known_dockerfile():
    text = "ARG IMG=python:3.11-slim\nFROM ${IMG} AS a\n# c\nRUN x \\\n  # inner\n  y\nUSER 1\n"
    text += 'FROM a AS b\nCMD ["z"]\n'
    args, stages = parse_dockerfile(text)
    assert args == {"IMG": "python:3.11-slim"}
    assert [(s.base, s.name) for s in stages] == [("${IMG}", "a"), ("a", "b")]
    assert stages[0].instructions == [("RUN", "x  y"), ("USER", "1")]
    assert effective(stages, stages[1], "USER") == "1"
    assert effective(stages, stages[1], "HEALTHCHECK") is None


def test_multi_stage_with_a_slim_python_311_runtime(dockerfile):
    args, stages = dockerfile
    assert len(stages) >= 2
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    roots = {chain(stages, s)[0].base for s in stages}
    assert roots == {"${PYTHON_IMAGE}"}


@pytest.mark.parametrize("target", ["runtime", "gpu"])
def test_final_images_run_as_a_non_root_user_with_a_readiness_healthcheck(dockerfile, target):
    _, stages = dockerfile
    stage = _stage(stages, target)
    user = effective(stages, stage, "USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    health = effective(stages, stage, "HEALTHCHECK")
    assert health is not None and "CMD" in health
    assert "specrec-healthcheck" in health and '"ready"' in health
    assert effective(stages, stage, "CMD") == '["specrec-serve"]'
    # the runtime holds a venv copied from a builder, not build tools or sources
    copies = [a for i, a in stage.instructions if i == "COPY"]
    assert copies == [f"--from=venv-{'cpu' if target == 'runtime' else 'gpu'} /opt/venv /opt/venv"]


def test_user_is_created_and_owns_the_data_volume(dockerfile):
    _, stages = dockerfile
    base = _stage(stages, "runtime-base")
    run = " ".join(a for i, a in base.instructions if i == "RUN")
    assert "useradd" in run and "specrec" in run
    assert "chown specrec:specrec /data" in run
    assert effective(stages, base, "VOLUME") == '["/data"]'
    assert "SPECREC_HOME=/data" in (effective(stages, base, "ENV") or "")


def test_default_target_is_the_cpu_runtime(dockerfile):
    _, stages = dockerfile
    assert stages[-1].name == "runtime"


def test_cpu_image_pins_torch_from_the_cpu_index_before_the_project(dockerfile):
    _, stages = dockerfile
    cpu = _stage(stages, "venv-cpu")
    args = dict(a.partition("=")[::2] for i, a in cpu.instructions if i == "ARG")
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    (run,) = [a for i, a in cpu.instructions if i == "RUN"]
    torch_at = run.index('"torch==${TORCH_VERSION}"')
    assert '--index-url "${TORCH_INDEX_URL}"' in run[:torch_at]
    assert torch_at < run.index("/wheels/specrec-") < run.index('"specrec[cpu,postgres] @ file://')


def test_each_image_installs_one_faiss(dockerfile):
    """The CPU venv takes the cpu extra (faiss-cpu), the GPU venv the gpu extra (faiss-gpu)
    alone: both in one venv break the shared `faiss` module (contract/faisslib.py)."""
    _, stages = dockerfile
    (cpu,) = [a for i, a in _stage(stages, "venv-cpu").instructions if i == "RUN"]
    (gpu,) = [a for i, a in _stage(stages, "venv-gpu").instructions if i == "RUN"]
    assert "specrec[cpu,postgres] @ file://" in cpu and "gpu" not in cpu
    assert "specrec[gpu,postgres] @ file://" in gpu
    assert "faiss-cpu" not in gpu and "specrec[cpu" not in gpu


def test_no_secret_is_baked_into_the_image(dockerfile):
    args, stages = dockerfile
    names = list(args)
    for stage in stages:
        for instr, a in stage.instructions:
            if instr in ("ENV", "ARG", "LABEL"):
                names += re.findall(r"([A-Za-z_][A-Za-z0-9_.-]*)=", a) or [a.split()[0]]
    leaked = [n for n in names if SECRET_NAME.search(n)]
    assert leaked == []


def _dockerignore_includes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes. Directories match their
    contents (pattern `trainer/` or `trainer` covers trainer/x.py)."""
    included = True
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes) or (
            pat.startswith("**/") and any(fnmatch.fnmatchcase(x, pat[3:]) for x in parts)
        ):
            included = negate
    return included


def test_build_context_is_an_allow_list_of_exactly_what_is_copied(repo, dockerfile):
    lines = (repo / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "*"
    _, stages = dockerfile
    sources = [
        src
        for s in stages
        for i, a in s.instructions
        if i == "COPY" and not a.startswith("--from")
        for src in a.split()[:-1]
    ]
    assert sources  # pyproject.toml, README.md, trainer, service, scripts/healthcheck.py
    for src in sources:
        assert (repo / src).exists(), src
        assert _dockerignore_includes(
            patterns, src.rstrip("/") + "/x.py" if (repo / src).is_dir() else src
        ), f"{src} is COPYed but excluded by .dockerignore"
    for private in (".env", ".git/config", ".venv/bin/python", "var/models/CURRENT", "tests/x.py"):
        assert not _dockerignore_includes(patterns, private), private
    assert not _dockerignore_includes(patterns, "trainer/__pycache__/a.cpython-311.pyc")
