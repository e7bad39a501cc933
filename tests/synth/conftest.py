import pytest

from clinfuse.pipeline.cli import main


@pytest.fixture(scope="session")
def raw(tmp_path_factory):
    """One small synthetic export for the whole session."""
    out = tmp_path_factory.mktemp("raw")
    params = out / "params.yaml"
    params.write_text("synth:\n  adni_subjects: 30\n  mri_size: 12\n")
    assert main(["--params", str(params), "synth", "--out", str(out), "--subjects", "60", "--seed", "5"]) == 0
    return out
