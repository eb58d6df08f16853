"""``python -m deploy.make_secrets``: a Redis password, an API key and Flower's login for deploy/.

One env file per consumer in ``deploy/secrets/`` (mode 0600, git-ignored), so each service gets
only what it needs: docker compose reads them with ``env_file``, Kubernetes takes them as Secrets
(``kubectl create secret generic NAME --from-env-file=FILE``). The files hold the secrets as
environment variables, never as command-line arguments.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "secrets"
#: The Redis service's name, in compose and in the sluice namespace of Kubernetes.
REDIS_HOST = "redis"
FLOWER_USER = "ops"


@dataclass(frozen=True)
class SecretFile:
    """One env file: its name, the Kubernetes Secret made from it, its variables."""

    filename: str
    k8s_secret: str
    variables: dict[str, str]


def generate() -> list[SecretFile]:
    """Fresh random secrets; one Redis password in Redis' file, the URL and Sentinel mode's file."""
    password = secrets.token_hex(24)
    return [
        # REDISCLI_AUTH: read by the Redis container's start script and by redis-cli (health checks).
        SecretFile("redis.env", "sluice-redis", {"REDISCLI_AUTH": password}),
        SecretFile(
            "sluice.env",
            "sluice-redis-url",
            {"SLUICE_REDIS_URL": f"redis://:{password}@{REDIS_HOST}:6379/0"},
        ),
        # Sentinel mode (docker-compose.sentinel.yml, k8s-sentinel): the nodes' and sentinels' password.
        SecretFile("sentinel.env", "sluice-redis-sentinel", {"SLUICE_REDIS_PASSWORD": password}),
        SecretFile("api.env", "sluice-api-keys", {"SLUICE_API_KEYS": "sk-sluice-" + secrets.token_hex(24)}),
        # Flower reads FLOWER_<OPTION> variables: this is its --basic-auth, off the command line.
        SecretFile(
            "flower.env", "sluice-flower", {"FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{secrets.token_hex(16)}"}
        ),
    ]


def write(folder: Path, files: list[SecretFile], *, force: bool = False) -> list[Path]:
    """Write every file (owner-only); refuse if one exists, unless ``force`` (all or none, since
    three of them share the Redis password)."""
    paths = [folder / f.filename for f in files]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(map(str, existing))} exist; --force replaces them all")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, secret_file in zip(paths, files, strict=True):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.writelines(f"{name}={value}\n" for name, value in secret_file.variables.items())
        path.chmod(0o600)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Write the files and print how to use them."""
    parser = argparse.ArgumentParser(prog="python -m deploy.make_secrets", description=__doc__)
    parser.add_argument("--dir", type=Path, default=FOLDER, help=f"where to write (default {FOLDER})")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    files = generate()
    try:
        write(args.dir, files, force=args.force)
    except FileExistsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {', '.join(f.filename for f in files)} to {args.dir}")
    print("docker compose -f deploy/docker-compose.yml up    (reads them as env_file)")
    print("Kubernetes:  kubectl create namespace sluice")
    for f in files:
        source = args.dir / f.filename
        print(f"  kubectl -n sluice create secret generic {f.k8s_secret} --from-env-file={source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
