"""The rendered builder user-data passes cloud-init's own schema validation.

cloud-init is not installable on the host from PyPI in a usable form, so the check runs where cloud-init
is: inside an instance of the Multipass double (Debian 13, cloud-init 25.1), with `cloud-init schema -c`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.golden.test_user_data import render

pytestmark = pytest.mark.double


@pytest.mark.parametrize(
    "extra",
    [{}, {"golden_image_cloud_init_extra": {"runcmd": [["false"]]}}],
    ids=["default", "with-extra-runcmd"],
)
def test_rendered_user_data_passes_cloud_init_schema(multipass, instance, tmp_path: Path, extra: dict):
    text = render(tmp_path, **extra)
    proc = multipass("transfer", "-", f"{instance}:/tmp/user-data.yaml", input=text)
    assert proc.returncode == 0, proc.stderr
    proc = multipass("exec", instance, "--", "sudo", "cloud-init", "schema", "--config-file", "/tmp/user-data.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # cloud-init 22.4 prints "Valid cloud-config", 25.1 "Valid schema <file>"
    assert proc.stdout.startswith(("Valid cloud-config", "Valid schema")), proc.stdout


def test_schema_check_rejects_an_invalid_document(multipass, instance):
    bad = "#cloud-config\nssh_pwauth: [not, a, boolean]\nusers: 5\n"
    proc = multipass("transfer", "-", f"{instance}:/tmp/bad-user-data.yaml", input=bad)
    assert proc.returncode == 0, proc.stderr
    proc = multipass("exec", instance, "--", "sudo", "cloud-init", "schema", "--config-file", "/tmp/bad-user-data.yaml")
    assert proc.returncode != 0, proc.stdout
