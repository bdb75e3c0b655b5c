"""Phase A, the model bundle: ``download_models.py bundle`` uploading to tests.support.fake_hub with the real
huggingface_hub client, and a cold start linking every file from the bundle in a RunPod-style cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from tests.support.fake_hub import FakeHub
from tests.support.model_setup import (
    BUNDLE_REPO,
    FILES,
    LORA,
    REPO,
    UNET,
    UNET_BF16,
    VAE,
    Setup,
    table_lines,
    table_row,
)
from worker.model_bundle import (
    BUNDLE_MANIFEST,
    BundleError,
    bundle_file,
    bundle_manifest_bytes,
    parse_bundle_manifest,
)
from worker.models import parse_manifest


def installed_from_the_hub(model_setup: Setup) -> None:
    """Phase B into the models dir: where the bundle's files come from."""
    done = model_setup.run()
    assert done.returncode == 0, done.stderr


def uploads(hub: FakeHub) -> int:
    return len(hub.api_calls("lfs-upload"))


# ---------------------------------------------------------------------------------------- the bundle


def test_bundle_uploads_the_variants_files_and_a_bundle_manifest(model_setup: Setup, hub: FakeHub) -> None:
    installed_from_the_hub(model_setup)
    hub.clear_requests()

    done = model_setup.bundle()

    assert done.returncode == 0, done.stderr
    files = hub.files(BUNDLE_REPO)
    assert {path: files[path] for path in FILES} == FILES  # <folder>/<filename>, the install layout
    listed = parse_bundle_manifest(files[BUNDLE_MANIFEST])
    assert sorted(listed) == sorted(FILES)
    unet = listed["diffusion_models/unet.safetensors"]
    assert (unet.source_repo, unet.source_revision, unet.source_path) == (
        REPO,
        model_setup.commit,
        "weights/unet.safetensors",
    )
    assert (unet.size, unet.sha256) == (len(UNET), hashlib.sha256(UNET).hexdigest())
    assert json.loads(files[BUNDLE_MANIFEST])["variant"] == "fp8"
    assert uploads(hub) == 3 and len(hub.api_calls("commit")) == 1
    assert hub.created[0]["name"] == "wan-bundle" and not hub.is_private(BUNDLE_REPO)
    assert "[bundle] to upload: 3 of 3 files, 14.3 KB" in done.stdout
    lines = done.stdout.splitlines()
    finished = [line for line in lines if line.startswith("[upload] ") and " done in " in line]
    assert len(finished) == 3 and finished[-1].endswith("14.3 KB of 14.3 KB")
    assert f"RESULT ok: {BUNDLE_REPO}@{hub.head(BUNDLE_REPO)}" in done.stdout
    assert "MODEL_BUNDLE_REPO=TestOrg/wan-bundle" in done.stdout


def test_a_second_bundle_run_uploads_nothing(model_setup: Setup, hub: FakeHub) -> None:
    installed_from_the_hub(model_setup)
    assert model_setup.bundle().returncode == 0
    head = hub.head(BUNDLE_REPO)
    hub.clear_requests()

    again = model_setup.bundle()

    assert again.returncode == 0, again.stderr
    assert "is up to date (3 files); nothing uploaded" in again.stdout
    assert [r.kind for r in hub.requests] == ["info"]  # one look at the bundle, nothing written
    assert hub.head(BUNDLE_REPO) == head


def test_an_interrupted_bundle_resumes_without_sending_the_files_again(
    model_setup: Setup, hub: FakeHub
) -> None:
    installed_from_the_hub(model_setup)
    hub.inject_api("commit", "500")

    failed = model_setup.bundle()

    assert failed.returncode == 1
    assert "nothing was committed" in failed.stderr
    assert set(hub.files(BUNDLE_REPO)) == {".gitattributes"}  # no half-written bundle
    assert uploads(hub) == 3
    hub.clear_requests()

    resumed = model_setup.bundle()

    assert resumed.returncode == 0, resumed.stderr
    assert uploads(hub) == 0  # the Hub already had every object
    assert {path: hub.files(BUNDLE_REPO)[path] for path in FILES} == FILES


def test_bundle_dry_run_shows_the_uploads_and_their_total_and_writes_nothing(
    model_setup: Setup, hub: FakeHub
) -> None:
    installed_from_the_hub(model_setup)
    hub.clear_requests()

    plan = model_setup.bundle("--dry-run", "--private")

    assert plan.returncode == 0, plan.stderr
    assert table_row(plan.stdout, "vae/vae.safetensors")[1:3] == ["upload", str(len(VAE))]
    assert "to upload: 3 of 3 files, 14.3 KB; to delete: 0; repository to be created (private)" in plan.stdout
    assert "[dry-run] nothing was changed" in plan.stdout
    assert [r.kind for r in hub.requests] == ["info"]
    assert hub.head(BUNDLE_REPO) is None


def test_bundle_refuses_files_it_does_not_have_locally(model_setup: Setup, hub: FakeHub) -> None:
    done = model_setup.bundle()

    assert done.returncode == 2
    assert (
        "not available locally, so they cannot be uploaded: diffusion_models/unet.safetensors" in done.stderr
    )
    assert "python download_models.py --models-dir" in done.stderr  # what to do about it
    assert hub.head(BUNDLE_REPO) is None
    plan = model_setup.bundle("--dry-run")
    assert plan.returncode == 0 and "[dry-run] a real run would refuse: not available locally" in plan.stdout


def test_bundle_takes_files_from_the_cache_too(model_setup: Setup, hub: FakeHub) -> None:
    # Only the upstream cache holds the files (symlink -> blob, as huggingface_hub lays it out).
    snapshot_download(
        REPO, revision=model_setup.commit, cache_dir=model_setup.cache / "hub", endpoint=hub.endpoint
    )

    done = model_setup.bundle()

    assert done.returncode == 0, done.stderr
    assert {path: hub.files(BUNDLE_REPO)[path] for path in FILES} == FILES


def test_a_local_file_that_does_not_match_the_manifest_is_not_uploaded(
    model_setup: Setup, hub: FakeHub
) -> None:
    installed_from_the_hub(model_setup)
    model_setup.installed("vae", "vae.safetensors").write_bytes(bytes(len(VAE)))  # right size, wrong bytes

    done = model_setup.bundle()

    assert done.returncode == 1
    assert "vae/vae.safetensors" in done.stderr and "the manifest says" in done.stderr
    assert BUNDLE_MANIFEST not in hub.files(BUNDLE_REPO)  # nothing committed


def test_a_private_bundle_needs_the_token_and_never_prints_it(tmp_path: Path) -> None:
    with FakeHub(token="hf_secret_write_token") as hub:
        model_setup = Setup(hub, tmp_path)
        installed_from_the_hub(model_setup)

        refused = model_setup.bundle("--private")
        done = model_setup.bundle("--private", env={"HF_TOKEN": "hf_secret_write_token"})

    assert refused.returncode == 1 and "[failed]" in refused.stderr
    assert done.returncode == 0, done.stderr
    assert hub.created[-1]["visibility"] == "private" and hub.is_private(BUNDLE_REPO)
    assert "HF_TOKEN set" in done.stdout
    for run in (refused, done):
        assert "hf_secret_write_token" not in run.stdout + run.stderr


def test_bundling_another_variant_replaces_the_files_it_does_not_use(
    model_setup: Setup, hub: FakeHub
) -> None:
    installed_from_the_hub(model_setup)
    assert model_setup.bundle().returncode == 0
    assert model_setup.run("--variant", "bf16").returncode == 0

    done = model_setup.bundle("--variant", "bf16")

    assert done.returncode == 0, done.stderr
    files = hub.files(BUNDLE_REPO)
    assert files["diffusion_models/unet_bf16.safetensors"] == UNET_BF16
    assert "diffusion_models/unet.safetensors" not in files
    assert table_lines(done.stdout, "diffusion_models/unet.safetensors")[0].split()[1] == "delete"
    assert json.loads(files[BUNDLE_MANIFEST])["variant"] == "bf16"
    assert uploads(hub) == 3 + 1  # only the new file was sent


# ------------------------------------------------------------------------------- the bundle at cold start


def bundle_in_the_cache(model_setup: Setup, hub: FakeHub) -> str:
    """Build the bundle, then lay it out in the RunPod cache as huggingface_hub downloads a repository."""
    installed_from_the_hub(model_setup)
    assert model_setup.bundle().returncode == 0
    head = hub.head(BUNDLE_REPO)
    assert head is not None
    snapshot_download(BUNDLE_REPO, revision=head, cache_dir=model_setup.cache / "hub", endpoint=hub.endpoint)
    hub.clear_requests()
    return head


def cold_start(model_setup: Setup, models: Path, *args: str) -> tuple[int, str, str]:
    done = model_setup.run("--models-dir", str(models), *args, env={"MODEL_BUNDLE_REPO": BUNDLE_REPO})
    return done.returncode, done.stdout, done.stderr


def test_a_cold_start_links_every_file_from_the_cached_bundle_and_downloads_nothing(
    model_setup: Setup, hub: FakeHub, tmp_path: Path
) -> None:
    head = bundle_in_the_cache(model_setup, hub)
    models = tmp_path / "cold"

    code, out, err = cold_start(model_setup, models)

    assert code == 0, err
    assert hub.requests == []  # zero downloads, not even a request
    snapshot = model_setup.cache / "hub" / "models--TestOrg--wan-bundle" / "snapshots" / head
    for relpath, content in FILES.items():
        target = models / relpath
        assert target.is_symlink() and target.resolve().parent.name == "blobs"
        assert Path(target.readlink()) == snapshot / relpath
        assert target.read_bytes() == content
    ready = [line for line in out.splitlines() if line.startswith("[ready] ")]
    assert len(ready) == 3 and all(
        f"bundle cache {BUNDLE_REPO}@{head[:12]}, linked" in line for line in ready
    )
    assert "RESULT ok: 3 files (0 installed, 3 bundle-cache, 0 upstream-cache, 0 downloaded)" in out
    assert "[check] hashing" not in out  # the blob names are the sha256


def plain_bundle(model_setup: Setup, files: dict[str, bytes], listed: dict[str, bytes] | None = None) -> Path:
    """A bundle snapshot of plain files (no blobs named by sha256); bundle.json lists ``listed``."""
    snapshot = model_setup.cache / "hub" / "models--TestOrg--wan-bundle" / "snapshots" / ("b" * 40)
    manifest = parse_manifest(model_setup.manifest)
    entries = {f.relpath: f for f in manifest.select()}
    records = [bundle_file(entries[path], len(content)) for path, content in (listed or files).items()]
    snapshot.mkdir(parents=True)
    (snapshot / BUNDLE_MANIFEST).write_bytes(bundle_manifest_bytes(records, "fp8"))
    for relpath, content in files.items():
        (snapshot / relpath).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / relpath).write_bytes(content)
    return snapshot


def test_plain_bundle_files_are_hashed_once_and_remembered(
    model_setup: Setup, hub: FakeHub, tmp_path: Path
) -> None:
    plain_bundle(model_setup, FILES)
    models = tmp_path / "cold"

    first = cold_start(model_setup, models)
    second = cold_start(model_setup, models)

    assert first[0] == 0, first[2]
    assert first[1].count("[check] hashing") == 3
    assert "3 bundle-cache" in first[1]
    assert second[0] == 0, second[2]
    assert "[check] hashing" not in second[1]
    assert "RESULT ok: 3 files (3 installed, 0 bundle-cache" in second[1]
    assert hub.requests == []


def test_a_bundle_file_with_other_bytes_is_downloaded_from_upstream_instead(
    model_setup: Setup, hub: FakeHub, tmp_path: Path
) -> None:
    plain_bundle(model_setup, {**FILES, "vae/vae.safetensors": bytes(len(VAE))})  # right size, wrong bytes
    models = tmp_path / "cold"

    code, out, err = cold_start(model_setup, models)

    assert code == 0, err
    assert (models / "vae" / "vae.safetensors").read_bytes() == VAE
    assert not (models / "vae" / "vae.safetensors").is_symlink()
    plan = table_lines(out, "vae/vae.safetensors")[0]
    assert "download" in plan and "bundle" in plan and "the bundle copy: sha256" in plan
    assert table_row(out, "loras/lora.safetensors")[1] == "bundle-cache"
    assert hub.requests_for("loras/lora.safetensors") == []


def test_files_the_bundle_lacks_or_holds_in_another_version_come_from_the_hub(
    model_setup: Setup, hub: FakeHub, tmp_path: Path
) -> None:
    other = bytes(len(LORA))
    plain_bundle(
        model_setup,
        {"diffusion_models/unet.safetensors": UNET, "loras/lora.safetensors": other},
        listed={"diffusion_models/unet.safetensors": UNET, "loras/lora.safetensors": LORA},
    )
    listed = (
        model_setup.cache / "hub" / "models--TestOrg--wan-bundle" / "snapshots" / ("b" * 40) / BUNDLE_MANIFEST
    )
    data = json.loads(listed.read_bytes())
    data["files"][1]["sha256"] = hashlib.sha256(other).hexdigest()  # the bundle says it holds another LoRA
    listed.write_text(json.dumps(data))
    models = tmp_path / "cold"

    code, out, err = cold_start(model_setup, models)

    assert code == 0, err
    assert table_row(out, "diffusion_models/unet.safetensors")[1] == "bundle-cache"
    assert "not in bundle TestOrg/wan-bundle@bbbbbbbbbbbb" in table_lines(out, "vae/vae.safetensors")[0]
    assert "holds another version" in table_lines(out, "loras/lora.safetensors")[0]
    assert (models / "vae" / "vae.safetensors").read_bytes() == VAE
    assert (models / "loras" / "lora.safetensors").read_bytes() == LORA
    assert hub.requests_for("weights/unet.safetensors") == []


def test_a_bundle_that_is_not_in_the_cache_is_said_once_and_phase_b_takes_over(
    model_setup: Setup, hub: FakeHub, tmp_path: Path
) -> None:
    code, out, err = cold_start(model_setup, tmp_path / "cold")

    assert code == 0, err
    assert f"[bundle] {BUNDLE_REPO} is not in the cache at" in out
    assert "3 downloaded" in out


def test_an_unusable_bundle_manifest_is_reported_and_ignored(model_setup: Setup, tmp_path: Path) -> None:
    snapshot = plain_bundle(model_setup, FILES)
    (snapshot / BUNDLE_MANIFEST).write_text('{"kind": "something else"}')

    code, out, err = cold_start(model_setup, tmp_path / "cold")

    assert code == 0, err
    assert "bundle.json is unusable" in err
    assert "3 downloaded" in out


# ------------------------------------------------------------------------------------ bundle.json itself


def test_the_bundle_manifest_is_the_same_bytes_for_the_same_content(model_setup: Setup) -> None:
    manifest = parse_manifest(model_setup.manifest)
    records = [bundle_file(f, f.size or 0) for f in manifest.select()]

    first = bundle_manifest_bytes(records, "fp8")

    assert first == bundle_manifest_bytes(list(reversed(records)), "fp8")
    assert parse_bundle_manifest(first) == {r.path: r for r in records}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"path": "../etc/passwd"}, "is not <models folder>/<file name>"),
        ({"path": "checkpoints/x.safetensors"}, "is not <models folder>/<file name>"),
        ({"sha256": "ABC"}, "sha256 must be 64 lowercase hex"),
        ({"size": 0}, "size must be a positive integer"),
        ({"source_revision": "main"}, "40-hex commit"),
    ],
)
def test_a_bundle_manifest_with_a_bad_entry_is_refused(
    model_setup: Setup, change: dict, complaint: str
) -> None:
    manifest = parse_manifest(model_setup.manifest)
    data = json.loads(bundle_manifest_bytes([bundle_file(f, f.size or 0) for f in manifest.select()], "fp8"))
    data["files"][0].update(change)
    with pytest.raises(BundleError, match=complaint):
        parse_bundle_manifest(json.dumps(data).encode())


def test_files_without_pins_do_not_go_into_a_bundle(model_setup: Setup, hub: FakeHub) -> None:
    model_setup.manifest["files"][2].update(revision=None, todo="unknown", size=None, size_estimate=4096)

    done = model_setup.bundle()

    assert done.returncode == 2
    assert "a bundle holds only pinned files (revision and sha256): loras/lora.safetensors" in done.stderr
    assert hub.requests == []
