"""The runtime's process settings: OpenMP threads wait passively unless the user says."""

import os
import subprocess
import sys

SCRIPT = "import os, transfuse; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy_after_import(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**base, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_transfuse_makes_idle_openmp_threads_sleep():
    assert _policy_after_import() == "PASSIVE"


def test_a_wait_policy_the_user_set_is_kept():
    assert _policy_after_import(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
