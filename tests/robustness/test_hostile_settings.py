"""Settings and paths never become SQL: a crafted memory_limit is refused, a quote in a path works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clinfuse.etl.mimic.ehr import connect
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from clinfuse.pipeline.stages.etl_mimic import build_mimic_cohort

GOLDEN = Path(__file__).resolve().parents[1] / "mimic" / "golden"
INJECTION = "1GB'; COPY (SELECT 42) TO '/tmp/clinfuse-injected.csv'; --"


def test_a_memory_limit_that_is_not_a_size_is_a_config_error_naming_the_key(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f'etl_mimic:\n  memory_limit: "{INJECTION}"\n')
    code = main(["--params", str(params), "etl", "mimic", "--task", "phenotype", "--mimic-iv", str(tmp_path),
                 "--mimic-cxr", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "etl_mimic.memory_limit" in err and "expected a size with units" in err
    assert not Path("/tmp/clinfuse-injected.csv").exists()


def test_the_duckdb_connection_refuses_a_crafted_memory_limit_too():
    with pytest.raises(ValueError, match="memory_limit must be a size"):
        connect(INJECTION, 1)


@pytest.mark.parametrize("size", ["2GB", "512MB", "1.5GiB", " 4 gb "])
def test_ordinary_memory_sizes_are_accepted(size):
    assert MimicEtlSettings(memory_limit=size).memory_limit == size


def test_a_quote_in_the_export_path_and_temp_directory_is_handled(tmp_path):
    raw = tmp_path / "o'brien's data"
    shutil.copytree(GOLDEN / "input", raw)
    spill = tmp_path / "spill 'dir'"
    spill.mkdir()
    con = connect("256MB", 1, str(spill))
    assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0].endswith("spill 'dir'")
    settings = MimicEtlSettings(workers=1, threads=1, memory_limit="256MB", cxr_size=8)
    build_mimic_cohort(raw / "mimic-iv", raw / "mimic-cxr-jpg", raw / "mimic-cxr-jpg", "phenotype",
                       tmp_path / "out", settings)
    assert (tmp_path / "out" / "ehr.npy").is_file()
