"""One job spec: flags, TOML keys and the fingerprint all come from JobSpec's fields."""

from dataclasses import fields, replace
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.client.jobspec import FINGERPRINT_KEYS, IDENTITY_FIELDS, JobSpec
from pipeline.client.orchestrate import resolve_spec
from pipeline.client.state import fingerprint

ROOT = Path(__file__).resolve().parents[1]
BASE = JobSpec(manifest=str(ROOT / "manifests" / "demo.parquet"), output="out/x", device="cpu")

# A different, valid value for each identity field.
OTHER = {"size": 128, "batch_size": 3, "format": "tiff", "quality": 80, "recolor": True,
         "compile": True, "jpeg_decode": "device", "max_pixels": 1000, "device": "cuda",
         "metadata_columns": "title=Titel"}


def test_every_identity_field_changes_the_fingerprint(tmp_path):
    assert set(OTHER) == set(IDENTITY_FIELDS)  # a new identity field must be listed here
    from pipeline.client.manifest import scan

    (tmp_path / "k.csv").write_text("path;Inventarnummer;Titel\n"
                                    + "".join(f"{p};A-{i};T{i}\n" for i, p in enumerate(
                                        sorted((ROOT / "pipeline" / "samples").rglob("*.*")))))
    base_spec = replace(BASE, manifest=str(tmp_path / "m.parquet"))
    scan([str(tmp_path / "k.csv")], base_spec.manifest, progress=False)
    base = fingerprint(resolve_spec(base_spec))
    assert resolve_spec(base_spec)["metadata_columns"] == "identifier=Inventarnummer,title=Titel"
    for name, value in OTHER.items():
        changed = replace(base_spec, **{name: value})
        if name == "device":  # cuda without a GPU here: as a remote cluster's workers would have it
            changed = replace(changed, scheduler="tcp://gpu-cluster:8786")
        assert fingerprint(resolve_spec(changed)) != base, name


def test_other_fields_leave_the_fingerprint_alone():
    base = fingerprint(resolve_spec(BASE))
    same = replace(BASE, output="elsewhere", workers=3, threads=5, window=9, retries=0,
                   resource_timeout=9.0, dry_run=True, restart=True, repair=True, quiet=True)
    assert fingerprint(resolve_spec(same)) == base
    assert set(FINGERPRINT_KEYS) == {"manifest_digest", "checkpoint_sha256", "output_version",
                                     *IDENTITY_FIELDS}


def test_every_field_is_a_flag_with_its_default_and_a_toml_key(tmp_path):
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    dests = {a.dest: a for a in run._actions}
    for f in fields(JobSpec):
        assert f.name in dests, f.name
        assert dests[f.name].default == f.default, f.name
        assert dests[f.name].help
    from pipeline.cli import apply_job_spec

    with pytest.raises(Exception, match="unknown key 'shard_sizes'"):
        apply_job_spec(run, {"shard_sizes": 3}, str(tmp_path / "job.toml"))
    with pytest.raises(Exception, match="format = 'gif'"):
        apply_job_spec(run, {"format": "gif"}, str(tmp_path / "job.toml"))
