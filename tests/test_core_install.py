"""The README's first command installs the package with no extra and runs the demo: no
module the library imports on that path may need an optional extra (or a development
dependency). Each is made unimportable here, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

#: The import names of every optional extra's and development dependency's packages.
NOT_IN_A_CORE_INSTALL = (
    "psycopg", "psycopg_pool", "uvicorn", "telegram", "aiosmtplib", "segno", "matplotlib",
    "opentelemetry", "prometheus_client", "jinja2", "markupsafe", "starlette", "fastapi",
    "django", "aiosmtpd", "standardwebhooks", "twilio", "selenium", "httpx_aiohttp",
)  # fmt: skip

BLOCK = f"import sys\nfor name in {NOT_IN_A_CORE_INSTALL!r}:\n    sys.modules[name] = None\n"


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120
    )


def test_the_demo_runs_on_a_core_install() -> None:
    done = run(
        "from cascade_notify.cli import main\nsys.argv = ['cascade-notify', 'demo']\nmain()\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "delivered" in done.stdout


def test_the_package_and_its_cli_import_on_a_core_install() -> None:
    done = run("import cascade_notify, cascade_notify.cli, cascade_notify.testing\n")
    assert done.returncode == 0, done.stderr[-3000:]
