"""download_models.py end to end: the real huggingface_hub client against tests.support.fake_hub,
a fake RunPod cache folder and real files, through the command line."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

import download_models
from tests.support.fake_hub import FakeHub, SilentServer, refusing_endpoint
from tests.support.model_setup import (
    LORA,
    REPO,
    ROOT,
    UNET,
    UNET_BF16,
    VAE,
    Setup,
    entry,
    make_cache_file,
    table_lines,
    table_row,
)
from worker import models


def cdn_gets(hub: FakeHub, path: str) -> list:
    return hub.requests_for(path, method="GET", server="cdn")


# ------------------------------------------------------------------------------------------- install


def test_downloads_every_file_at_the_pinned_revision(model_setup: Setup) -> None:
    done = model_setup.run()

    assert done.returncode == 0, done.stderr
    assert model_setup.installed("diffusion_models", "unet.safetensors").read_bytes() == UNET
    assert model_setup.installed("vae", "vae.safetensors").read_bytes() == VAE
    assert model_setup.installed("loras", "lora.safetensors").read_bytes() == LORA
    heads = model_setup.hub.requests_for("weights/unet.safetensors", method="HEAD", server="hub")
    assert {h.revision for h in heads} == {model_setup.commit}
    assert table_row(done.stdout, "diffusion_models/unet.safetensors")[1:3] == ["downloaded", str(len(UNET))]
    assert "RESULT ok: 3 files (0 installed, 0 bundle-cache, 0 upstream-cache, 3 downloaded)" in done.stdout
    ready = [line for line in done.stdout.splitlines() if line.startswith("[ready] ")]
    assert len(ready) == 3 and all(
        f"downloaded from {REPO}@{model_setup.commit[:12]}" in line for line in ready
    )
    # nothing left behind but the installed files and the hash record
    leftovers = sorted(
        p.relative_to(model_setup.models).as_posix() for p in model_setup.models.rglob("*") if p.is_file()
    )
    assert leftovers == [
        ".download_models/verified.json",
        "diffusion_models/unet.safetensors",
        "loras/lora.safetensors",
        "vae/vae.safetensors",
    ]


def test_requests_name_the_pinned_commit_not_a_branch(model_setup: Setup, hub: FakeHub) -> None:
    hub.commit(REPO, {"weights/unet.safetensors": b"a newer main"})  # main moves on; the pin must not

    done = model_setup.run()

    assert done.returncode == 0, done.stderr
    assert model_setup.installed("diffusion_models", "unet.safetensors").read_bytes() == UNET
    assert {r.revision for r in model_setup.hub.requests_for("weights/unet.safetensors")} == {
        model_setup.commit
    }


def test_second_run_skips_present_files_without_contacting_the_hub(model_setup: Setup) -> None:
    assert model_setup.run().returncode == 0
    model_setup.hub.clear_requests()

    again = model_setup.run()

    assert again.returncode == 0, again.stderr
    assert model_setup.hub.requests == []
    assert table_row(again.stdout, "vae/vae.safetensors")[1] == "installed"
    assert "RESULT ok: 3 files (3 installed, 0 bundle-cache, 0 upstream-cache, 0 downloaded)" in again.stdout
    assert "[ready] +" in again.stdout and "vae/vae.safetensors: already installed (verified)" in again.stdout


def test_dropped_connection_resumes_with_a_range_request(model_setup: Setup, hub: FakeHub) -> None:
    # huggingface_hub writes in 10 MiB chunks: the file must outgrow one so the partial body reaches disk.
    big = os.urandom(12 * 1024 * 1024)
    commit = hub.commit(REPO, {"weights/big.safetensors": big}, ref=None)
    model_setup.manifest["files"].append(
        entry("big", "diffusion_models", "big.safetensors", "weights/big.safetensors", big, commit)
    )
    hub.inject("weights/big.safetensors", ("drop", 11 * 1024 * 1024))

    done = model_setup.run()

    assert done.returncode == 0, done.stderr
    gets = cdn_gets(hub, "weights/big.safetensors")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={10 * 1024 * 1024}-"
    assert model_setup.installed("diffusion_models", "big.safetensors").read_bytes() == big


def test_transient_server_error_is_retried(model_setup: Setup) -> None:
    model_setup.hub.inject("vae/vae.safetensors", "500")

    done = model_setup.run()

    assert done.returncode == 0, done.stderr
    assert len(cdn_gets(model_setup.hub, "vae/vae.safetensors")) == 2
    assert "[retry] vae/vae.safetensors: attempt 1 of 5 failed" in done.stderr
    assert model_setup.installed("vae", "vae.safetensors").read_bytes() == VAE


def test_persistent_server_error_fails_after_the_retries(model_setup: Setup) -> None:
    model_setup.hub.inject("vae/vae.safetensors", "500", "500", "500")

    done = model_setup.run("--retries", "2")

    assert done.returncode == 1
    assert len(cdn_gets(model_setup.hub, "vae/vae.safetensors")) == 3
    gave_up = r"\[failed\] vae/vae.safetensors: gave up after 3 attempts in [\d.]+ s; the last: "
    assert re.search(gave_up, done.stderr), done.stderr
    assert not model_setup.installed("vae", "vae.safetensors").exists()
    assert model_setup.installed("loras", "lora.safetensors").read_bytes() == LORA  # the others still install


def test_file_missing_on_the_hub_fails_naming_it(model_setup: Setup) -> None:
    model_setup.manifest["files"][2]["path"] = "loras/renamed_upstream.safetensors"

    done = model_setup.run()

    assert done.returncode == 1
    assert "[failed] loras/lora.safetensors: not found on the Hub" in done.stderr
    assert "loras/renamed_upstream.safetensors (404)" in done.stderr
    assert (
        len(model_setup.hub.requests_for("loras/renamed_upstream.safetensors", method="HEAD")) == 1
    )  # not retried
    assert model_setup.installed("vae", "vae.safetensors").exists()


def test_corrupt_file_of_the_right_size_is_downloaded_again(model_setup: Setup) -> None:
    bad = model_setup.installed("vae", "vae.safetensors")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(bytes(len(VAE)))  # right size, wrong bytes

    done = model_setup.run()

    assert done.returncode == 0, done.stderr
    assert bad.read_bytes() == VAE
    assert len(cdn_gets(model_setup.hub, "vae/vae.safetensors")) == 1
    plan_line = table_lines(done.stdout, "vae/vae.safetensors")[0]
    assert "download" in plan_line and "sha256" in plan_line  # the plan names the mismatch


def test_download_with_wrong_sha256_in_manifest_is_not_installed(model_setup: Setup) -> None:
    model_setup.manifest["files"][1]["sha256"] = "0" * 64

    done = model_setup.run()

    assert done.returncode == 1
    assert "vae/vae.safetensors: sha256 of the download is" in done.stderr
    assert not model_setup.installed("vae", "vae.safetensors").exists()


# ------------------------------------------------------------------------------- a Hub that fails


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_a_refusing_hub_fails_every_download_once_with_the_reason(model_setup: Setup) -> None:
    done = model_setup.run("--retries", "2", endpoint=refusing_endpoint())

    assert done.returncode == 1
    failed = _lines(done.stderr, "[failed]")
    assert len(failed) == 1, done.stderr  # one cause, said once, naming every file it stopped
    assert "3 files: the Hub at http://127.0.0.1:" in failed[0] and "could not be reached" in failed[0]
    assert "gave up after 3 attempts" in failed[0] and "ConnectError" in failed[0]
    for relpath in ("diffusion_models/unet.safetensors", "vae/vae.safetensors", "loras/lora.safetensors"):
        assert relpath in failed[0]
    assert len(_lines(done.stderr, "[retry]")) == 2  # the preflight's, not one per file
    assert "Retrying in" not in done.stderr  # huggingface_hub did not retry on its own
    assert _lines(done.stdout, "[download]") == [] and _lines(done.stdout, "[total]") == []
    assert not model_setup.installed("vae", "vae.safetensors").exists()


def test_retries_are_ours_alone_a_failing_hub_gets_retries_plus_one_requests(model_setup: Setup) -> None:
    model_setup.hub.inject_resolve("weights/unet.safetensors", *["503"] * 10)

    done = model_setup.run("--retries", "2")

    assert done.returncode == 1
    assert len(model_setup.hub.requests_for("weights/unet.safetensors", method="HEAD")) == 3
    assert (
        cdn_gets(model_setup.hub, "vae/vae.safetensors") == []
    )  # nothing started once the Hub was found down
    assert len(_lines(done.stderr, "[failed]")) == 1


def test_a_transient_error_of_one_file_costs_one_more_request(model_setup: Setup) -> None:
    model_setup.hub.inject_resolve("vae/vae.safetensors", "503")

    done = model_setup.run()

    assert done.returncode == 0, done.stderr
    assert len(model_setup.hub.requests_for("vae/vae.safetensors", method="HEAD")) == 2
    assert model_setup.installed("vae", "vae.safetensors").read_bytes() == VAE


def test_a_hanging_hub_is_given_up_within_the_configured_bound(model_setup: Setup) -> None:
    with SilentServer() as silent:
        started = time.monotonic()
        done = model_setup.run("--retries", "1", "--timeout", "1", endpoint=silent.endpoint)
        seconds = time.monotonic() - started
        connections = silent.connections

    assert done.returncode == 1
    assert connections == 2  # (retries + 1) requests of at most --timeout each
    # Bound: 2 x 1 s + the wait; huggingface_hub's own retries would add 6 x 60 s per attempt.
    assert seconds < 60, seconds
    failed = _lines(done.stderr, "[failed]")
    assert len(failed) == 1 and "could not be reached" in failed[0] and "Timeout" in failed[0]


def test_progress_counts_only_the_bytes_of_the_file_and_says_when_none_arrived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage = tmp_path / "stage"
    (stage / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (stage / ".cache" / "huggingface" / "download" / "x.metadata").write_bytes(bytes(192))
    (stage / ".cache" / "huggingface" / ".gitignore").write_bytes(b"*")
    progress = download_models.Progress(download_models.Output(), total_bytes=17 * 10**9, interval=60)
    progress.started("diffusion_models/big.safetensors", stage, 17 * 10**9)

    progress.report()

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("[download] no byte yet: diffusion_models/big.safetensors (")
    assert not any("%" in line for line in lines)  # no "0.0% 192 B of 17.0 GB"


# ------------------------------------------------------------------------------------------ the cache


def test_cached_file_at_the_pinned_revision_is_linked_not_downloaded(model_setup: Setup) -> None:
    cached = make_cache_file(model_setup.cache, REPO, model_setup.commit, "weights/unet.safetensors", UNET)

    done = model_setup.run()

    assert done.returncode == 0, done.stderr
    target = model_setup.installed("diffusion_models", "unet.safetensors")
    assert target.is_symlink() and Path(os.readlink(target)) == cached
    assert target.read_bytes() == UNET
    assert model_setup.hub.requests_for("weights/unet.safetensors") == []
    assert table_row(done.stdout, "diffusion_models/unet.safetensors")[1] == "upstream-cache"
    linked = f"diffusion_models/unet.safetensors: upstream cache {REPO}@{model_setup.commit[:12]}, linked"
    assert linked in done.stdout


def test_cache_of_another_revision_is_reported_and_not_used(model_setup: Setup) -> None:
    make_cache_file(model_setup.cache, REPO, "f" * 40, "weights/unet.safetensors", b"old weights")

    plan = model_setup.run("--dry-run")

    assert plan.returncode == 0, plan.stderr
    plan_line = table_lines(plan.stdout, "diffusion_models/unet.safetensors")[0]
    assert "download" in plan_line and "cache has other revision ffffffffffff" in plan_line
    done = model_setup.run()
    assert done.returncode == 0, done.stderr
    target = model_setup.installed("diffusion_models", "unet.safetensors")
    assert not target.is_symlink() and target.read_bytes() == UNET


# ------------------------------------------------------------------------------------- refusals, modes


def test_not_enough_disk_space_is_refused_before_any_request(model_setup: Setup) -> None:
    model_setup.manifest["files"][0].update(size=None, sha256=None, size_estimate=10**18)

    done = model_setup.run()

    assert done.returncode == 2
    refused = r"\[refused\] not enough disk space: .* free under .*; missing \d"
    assert re.search(refused, done.stderr), done.stderr
    assert model_setup.hub.requests == []
    assert not model_setup.models.exists()


def test_min_free_bytes_is_part_of_the_disk_check(model_setup: Setup) -> None:
    done = model_setup.run("--min-free-bytes", str(10**18))

    assert done.returncode == 2
    assert "must stay free; missing" in done.stderr
    assert model_setup.hub.requests == []


def test_dry_run_prints_the_plan_and_changes_nothing(model_setup: Setup) -> None:
    done = model_setup.run("--dry-run")

    assert done.returncode == 0, done.stderr
    assert table_row(done.stdout, "vae/vae.safetensors")[1:3] == ["download", str(len(VAE))]
    total = len(UNET) + len(VAE) + len(LORA)
    assert re.search(rf"\[disk\] downloads need {total / 1000:.1f} KB, .* free under .*: ok", done.stdout)
    assert "[dry-run] nothing was changed" in done.stdout
    assert model_setup.hub.requests == []
    assert not model_setup.models.exists()


def test_unpinned_entry_is_refused_unless_allowed(model_setup: Setup) -> None:
    model_setup.manifest["files"][2].update(
        revision=None, todo="commit unknown", size=None, size_estimate=4096
    )

    refused = model_setup.run()

    assert refused.returncode == 2
    assert "no pinned revision for: loras/lora.safetensors" in refused.stderr
    assert "ALLOW_UNPINNED_MODELS=1" in refused.stderr
    assert model_setup.hub.requests == []
    plan = model_setup.run("--dry-run")
    assert plan.returncode == 0, plan.stderr  # a plan, not a refusal: it says what a run would refuse
    assert "[dry-run] a real run would refuse: no pinned revision for: loras/lora.safetensors" in plan.stdout
    assert "[disk] downloads need" in plan.stdout

    allowed = model_setup.run(env={"ALLOW_UNPINNED_MODELS": "1"})

    assert allowed.returncode == 0, allowed.stderr
    assert model_setup.installed("loras", "lora.safetensors").read_bytes() == LORA
    assert f"[unpinned] loras/lora.safetensors: main is {model_setup.commit}" in allowed.stdout


def test_bf16_variant_replaces_the_diffusion_model(model_setup: Setup) -> None:
    done = model_setup.run(env={"MODEL_VARIANT": "bf16"})

    assert done.returncode == 0, done.stderr
    assert model_setup.installed("diffusion_models", "unet_bf16.safetensors").read_bytes() == UNET_BF16
    assert not model_setup.installed("diffusion_models", "unet.safetensors").exists()
    assert model_setup.installed("vae", "vae.safetensors").exists()
    printed = model_setup.run("--print-filename", "diffusion_model", "--variant", "bf16")
    assert printed.stdout.strip() == "unet_bf16.safetensors"


def test_verify_reports_a_wrong_size_and_exits_non_zero(model_setup: Setup) -> None:
    assert model_setup.run().returncode == 0
    assert model_setup.run("--verify").returncode == 0
    with open(model_setup.installed("loras", "lora.safetensors"), "ab") as fh:
        fh.write(b"tail")

    done = model_setup.run("--verify")

    assert done.returncode == 1
    assert f"loras/lora.safetensors: size {len(LORA) + 4} bytes, expected {len(LORA)}" in done.stderr
    assert table_row(done.stdout, "vae/vae.safetensors")[1] == "ok"


def test_verify_hashes_even_files_recorded_as_hashed(model_setup: Setup) -> None:
    assert model_setup.run().returncode == 0
    target = model_setup.installed("vae", "vae.safetensors")
    stat = target.stat()
    target.write_bytes(bytes(len(VAE)))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime as the record

    done = model_setup.run("--verify")

    assert done.returncode == 1
    assert "vae/vae.safetensors: sha256" in done.stderr


def test_check_remote_compares_manifest_with_the_hub(model_setup: Setup) -> None:
    assert model_setup.run("--check-remote").returncode == 0
    model_setup.manifest["files"][1]["size"] = len(VAE) + 1

    done = model_setup.run("--check-remote")

    assert done.returncode == 1
    assert f"vae/vae.safetensors: size {len(VAE)} != {len(VAE) + 1}" in done.stderr
    assert model_setup.hub.requests_for("vae/vae.safetensors", method="GET") == []


# ------------------------------------------------------------------------------- the real manifest


def test_real_manifest_is_well_formed() -> None:
    manifest = models.load_manifest(ROOT / "models" / "manifest.json")
    raw = json.loads((ROOT / "models" / "manifest.json").read_text())

    entries = raw["files"] + [f for alt in raw["alternatives"].values() for f in alt["files"]]
    for item in entries:
        for key in ("filename", "folder", "repo", "path", "revision", "size", "sha256"):
            assert key in item, (item["filename"], key)
        assert item["folder"] in models.FOLDERS
        assert (item["size"] or item.get("size_estimate", 0)) > 0
        if item["revision"] is None:
            assert item.get("todo"), f"{item['filename']}: null revision without a note"
        else:
            assert re.fullmatch(r"[0-9a-f]{40}", item["revision"])
        assert item["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", item["sha256"])

    lean = {f.relpath for f in manifest.select()}
    assert "sam2/sam2.1_hiera_base_plus.safetensors" in lean
    assert "sam2/sam2.1_hiera_base_plus-fp16.safetensors" in lean
    assert {"detection/yolov10m.onnx", "detection/vitpose-l-wholebody.onnx"} <= lean
    assert (
        manifest.filename_for("diffusion_model") == "Wan2_2-Animate-14B_fp8_scaled_e4m3fn_KJ_v2.safetensors"
    )
    assert manifest.filename_for("diffusion_model", "bf16") == "wan2.2_animate_14B_bf16.safetensors"
    assert len(manifest.select("bf16")) == len(manifest.select())
    unpinned = [f.relpath for v in manifest.variants for f in manifest.select(v) if f.revision is None]
    assert unpinned == [], "no deployment should need ALLOW_UNPINNED_MODELS"
    yolo = next(f for f in manifest.select() if f.filename == "yolov10m.onnx")
    assert (yolo.revision, yolo.size) == ("0d22b5cd7b6e63bbdf132a495839a8e1c0824979", 61659339)


def test_installed_names_each_folder_of_a_variant() -> None:
    dit = entry("diffusion_model", "diffusion_models", "fp8.safetensors", "d/fp8.safetensors", VAE, "a" * 40)
    vae = entry("vae", "vae", "vae.safetensors", "vae/vae.safetensors", VAE, "a" * 40)
    bf16 = {**dit, "filename": "bf16.safetensors", "path": "d/bf16.safetensors"}
    manifest = models.parse_manifest(
        {"default_variant": "fp8", "files": [dit, vae], "alternatives": {"bf16": {"files": [bf16]}}}
    )
    assert manifest.installed() == {"diffusion_models": {"fp8.safetensors"}, "vae": {"vae.safetensors"}}
    assert manifest.installed("bf16")["diffusion_models"] == {"bf16.safetensors"}
    with pytest.raises(models.ManifestError, match="unknown variant 'fp4'"):
        manifest.installed("fp4")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"revision": "main"}, "40-hex commit"),
        ({"revision": None}, "'todo' note"),
        ({"size": 0}, "positive integer"),
        ({"size": None}, "size_estimate"),
        ({"folder": "checkpoints"}, "is not one of"),
        ({"sha256": "ABC"}, "64 lowercase hex"),
        ({"filename": "../x.safetensors"}, "plain file name"),
    ],
)
def test_manifest_validation_rejects_bad_entries(change: dict, message: str) -> None:
    good = entry("vae", "vae", "vae.safetensors", "vae/vae.safetensors", VAE, "a" * 40)
    with pytest.raises(models.ManifestError, match=re.escape(message)):
        models.parse_manifest({"files": [{**good, **change}]})


def test_progress_reports_each_download_and_the_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage = tmp_path / "stage"
    (stage / ".cache").mkdir(parents=True)
    (stage / ".cache" / "part.incomplete").write_bytes(bytes(500))
    progress = download_models.Progress(download_models.Output(), total_bytes=2000, interval=60)
    progress.finished("vae/done.safetensors", 500)
    progress.started("loras/lora.safetensors", stage, 1000)

    progress.report()

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[download] loras/lora.safetensors  50.0% 500 B of 1.0 KB")
    assert lines[1] == "[total]  50.0% 1.0 KB of 2.0 KB"


def test_unknown_variant_or_role_is_refused(model_setup: Setup) -> None:
    variant = model_setup.run("--dry-run", "--variant", "fp4")
    role = model_setup.run("--print-filename", "upscaler")

    assert variant.returncode == 2 and "unknown variant 'fp4'; known variants: fp8, bf16" in variant.stderr
    assert role.returncode == 2 and "no file with role 'upscaler'" in role.stderr


def test_model_settings_are_read_by_the_workers_rules(model_setup: Setup) -> None:
    """MODEL_VARIANT and friends are parsed by worker/config.py for the installer and the worker alike:
    a value the worker would refuse stops the installer too, naming the variable."""
    bad = model_setup.run("--dry-run", env={"MODEL_VARIANT": "fp4", "ALLOW_UNPINNED_MODELS": "maybe"})
    assert bad.returncode == 2
    assert "MODEL_VARIANT='fp4': expected one of fp8, bf16" in bad.stderr
    assert "ALLOW_UNPINNED_MODELS='maybe'" in bad.stderr
    assert not list(model_setup.models.rglob("*.safetensors"))
