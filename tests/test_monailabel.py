"""MONAI Label serving over HTTP (``python -m tools serve``): a real server on 127.0.0.1 with every bundle, ``/info/``,
``/infer`` on a real COVID-19 CT slice and a real CT volume (masks identical to ``python -m monai.bundle run``'s),
``/train`` for a one-epoch run that updates the served model; the server is stopped by its PID.

Needs the extra (``pip install -e ".[monailabel]"``); skipped without it. The pieces that do not need MONAI Label
(the model list, the served copies, the torchvision stub, the label writer) are tested without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tools.commands.serve import bundle_dirs, model_spec, prepare_app, served_copies

REPO = Path(__file__).resolve().parents[1]
RCB = REPO / "bundles" / "covid19_lesion_ct_rcbunetpp_segmentation"
SLICES = RCB / "sample_data" / "dataset" / "Imgs"
MASKS = RCB / "sample_data" / "dataset" / "GT"
CT = RCB / "sample_data" / "ct" / "example_ct_sm.nii.gz"

HAS_MONAILABEL = importlib.util.find_spec("monailabel") is not None
needs_monailabel = pytest.mark.skipif(
    not HAS_MONAILABEL, reason='monailabel is not installed (pip install -e ".[monailabel]", see README.md)')


def test_every_bundle_is_a_model_and_ct_configurations_get_their_own():
    dirs = bundle_dirs()
    spec = model_spec(dirs)
    assert {d.name for d in dirs} <= set(spec)
    assert spec["spine_vertebra_msrunet_segmentation_ct"]["configs"] == ["inference.json", "inference_ct.json"]
    assert spec[RCB.name]["configs"] == ["inference.json"]
    assert spec["spine_vertebra_msrunet_segmentation"]["dimension"] == 3 and spec[RCB.name]["dimension"] == 2
    with pytest.raises(FileNotFoundError, match="not a bundle"):
        bundle_dirs(["no_such_bundle"])


def test_served_copies_leave_the_repository_bundle_alone(tmp_path):
    app = prepare_app(tmp_path / "app")
    assert "SegBundlesApp" in (app / "main.py").read_text()
    (copy,) = served_copies([RCB], app)
    assert copy == app / "bundles" / RCB.name and (copy / "models" / "model.pt").is_file()
    assert not (copy / "eval").exists()
    (copy / "models" / "model.pt").write_bytes(b"trained here")
    (again,) = served_copies([RCB], app)  # an existing copy (with what training promoted) is kept
    assert (again / "models" / "model.pt").read_bytes() == b"trained here"
    assert (RCB / "models" / "model.pt").read_bytes() != b"trained here"


def test_metadata_labels_are_background_0_and_the_class_at_1():
    for d in bundle_dirs():
        meta = json.loads((d / "configs" / "metadata.json").read_text())
        channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
        assert set(channel_def) == {"0", "1"} and channel_def["0"] == "background", d.name
        assert len(channel_def["1"]) <= 20, f"{d.name}: a label name, not a description"


def test_torchvision_stub_is_a_no_op_when_torchvision_is_absent_or_imported(monkeypatch):
    from tools import torchvision_ops

    if "torchvision" in sys.modules:
        assert torchvision_ops.ensure_torchvision_imports() == "imported"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    assert torchvision_ops.ensure_torchvision_imports() == "absent"


@needs_monailabel
def test_label_writer_gives_png_0_1_and_nifti_with_the_affine(tmp_path):
    import nibabel as nib
    from monai.data import MetaTensor

    from tools.integrations.monailabel_app import write_label

    mask = torch.zeros(1, 5, 7)
    mask[0, 1:3, 2:6] = 1
    png = write_label(MetaTensor(mask), str(tmp_path / "a.png"))
    arr = np.asarray(Image.open(png))
    assert arr.dtype == np.uint8 and set(np.unique(arr)) == {0, 1} and arr.sum() == 8
    affine = torch.diag(torch.tensor([0.7, 0.7, 2.5, 1.0], dtype=torch.float64))
    vol = MetaTensor(torch.zeros(1, 4, 5, 6), affine=affine)
    vol[0, 1, 2, 3] = 1
    img = nib.load(write_label(vol, str(tmp_path / "a.nii.gz")))
    assert img.shape == (4, 5, 6) and np.allclose(img.affine, affine.numpy()) and img.get_data_dtype() == np.uint8
    with pytest.raises(ValueError, match="expected a mask"):
        write_label(torch.zeros(5, 7), str(tmp_path / "b.png"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes = b"", headers: dict | None = None, timeout: float = 600):
    """POST ``data`` to ``url``; (status, body)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def _bundle_run(tmp_path: Path, input_path: Path, name: str) -> Path:
    out = tmp_path / f"ref_{name}"
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(RCB / "configs" / "inference.json"),
                    "--bundle_root", str(RCB), "--input", str(input_path), "--output_dir", str(out)],
                   check=True, capture_output=True, timeout=600)
    return out


@needs_monailabel
@pytest.mark.slow
def test_monailabel_server_info_infer_2d_and_ct_and_train(tmp_path):
    import nibabel as nib

    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    names = ["0", "1", "24", "39"]
    for n in names:  # real slices, and their masks as MONAI Label keeps labels: label maps 0/1
        shutil.copy(SLICES / f"{n}.jpg", studies / f"{n}.jpg")
        m = np.asarray(Image.open(MASKS / f"{n}.png").convert("L")) >= 128
        Image.fromarray(m.astype(np.uint8)).save(studies / "labels" / "final" / f"{n}.png")
    shutil.copy(CT, studies / CT.name)
    app = tmp_path / "app"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tools", "serve", "--studies", str(studies), "--port", str(port),
                             "--app_dir", str(app)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        info = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/info/", timeout=10) as r:
                    info = json.loads(r.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        assert info is not None, "server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:]
        print(json.dumps({k: {"labels": v["labels"], "dimension": v["dimension"]} for k, v in info["models"].items()}))

        bundles = {d.name for d in bundle_dirs()}
        assert bundles <= set(info["models"]) and bundles <= set(info["trainers"])
        assert info["models"][RCB.name]["labels"] == {"lung infection": 1}
        assert info["models"]["spine_vertebra_msrunet_segmentation"]["dimension"] == 3
        assert not any(k.startswith("sam") for k in info["models"])

        # a real CT slice: PNG label map of the slice's size, the bundle's own mask / 255
        status, body = _request(f"{base}/infer/{RCB.name}?image=24&output=image")
        assert status == 200
        (tmp_path / "24.png").write_bytes(body)
        got = np.asarray(Image.open(tmp_path / "24.png"))
        ref = np.asarray(Image.open(_bundle_run(tmp_path, SLICES / "24.jpg", "slice") / "24_mask.png"))
        assert got.dtype == np.uint8 and got.shape == ref.shape == np.asarray(Image.open(SLICES / "24.jpg")).shape[:2]
        assert set(np.unique(got)) <= {0, 1} and got.sum() > 0
        np.testing.assert_array_equal(got.astype(int) * 255, ref)

        # a real CT volume: NIfTI in the input's geometry, through the volume path (lung mask), as monai.bundle run
        status, body = _request(f"{base}/infer/{RCB.name}?image={CT.name[:-7]}&output=image")
        assert status == 200
        (tmp_path / "ct.nii.gz").write_bytes(body)
        got = nib.load(tmp_path / "ct.nii.gz")
        ref = nib.load(_bundle_run(tmp_path, CT, "ct") / "example_ct_sm_mask.nii.gz")
        src = nib.load(CT)
        assert got.shape == src.shape and np.allclose(got.affine, src.affine)
        np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(ref.dataobj))

        # one short training run (1 epoch < val_interval 5) updates the served model, not the repository's
        served = app / "bundles" / RCB.name / "models" / "model.pt"
        before = hashlib.sha256(served.read_bytes()).hexdigest()
        repo_before = hashlib.sha256((RCB / "models" / "model.pt").read_bytes()).hexdigest()
        status, body = _request(f"{base}/train/{RCB.name}?run_sync=true",
                                data=json.dumps({"max_epochs": 1, "val_split": 0.25, "device": "cpu"}).encode(),
                                headers={"Content-Type": "application/json"})
        assert status == 200, body
        result = json.loads(body)
        print(result)
        assert Path(result["promoted"]) == served
        assert hashlib.sha256(served.read_bytes()).hexdigest() != before
        assert hashlib.sha256((RCB / "models" / "model.pt").read_bytes()).hexdigest() == repo_before
        run = Path(result["run_dir"])
        assert (run / "models" / "model.pt").is_file()
        assert sorted(p.stem for p in (run / "labels").glob("*.png")) == sorted(names)  # 0/1 -> 0/255 copies
        status, _ = _request(f"{base}/infer/{RCB.name}?image=24&output=image")  # served with the new model
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
