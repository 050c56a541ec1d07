"""docker/ cannot run here: its files parse, the commands they run exist, and no password is
written in them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dmlopt.cli import build_parser

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def _parses_as_dmlopt(args: list[str]) -> None:
    parsed = build_parser().parse_args(args)  # SystemExit (a failure) on an unknown command
    assert parsed.handler is not None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return list(spec["template"]["spec"]["containers"])


def test_kubernetes_example() -> None:
    docs = list(yaml.safe_load_all((DOCKER / "kubernetes.yaml").read_text()))
    by_name = {d["metadata"]["name"]: d for d in docs}
    assert set(by_name) == {"dmlopt-create", "dmlopt-workers", "dmlopt-final"}
    assert by_name["dmlopt-workers"]["spec"]["parallelism"] > 1
    commands = []
    for doc in docs:
        for container in _containers(doc):
            _parses_as_dmlopt(container["args"])
            commands.append(container["args"][0])
            env = {e["name"]: e for e in container["env"]}
            secret = env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "dmlopt-db", "key": "password"}
            assert "$(DB_PASSWORD)" in env["DMLOPT_STORAGE"]["value"]
    assert commands == ["create", "worker", "final"]


def test_compose_takes_the_password_from_an_env_file() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    worker = compose["services"]["worker"]
    _parses_as_dmlopt([re.sub(r"\$\{STUDY:-(.*)\}", r"\1", a) for a in worker["command"]])
    assert "${DB_PASSWORD:?" in worker["environment"]["DMLOPT_STORAGE"]
    assert "${DB_PASSWORD:?" in compose["services"]["db"]["environment"]["POSTGRES_PASSWORD"]
    assert "POSTGRES_PASSWORD: dmlopt" not in text and ":dmlopt@" not in text
    example = (DOCKER / "db.env.example").read_text()
    assert re.search(r"^DB_PASSWORD=", example, re.M)


def test_dockerfile_installs_what_the_storages_need() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert '".[postgres,proxy]"' in text
