"""Surface meshes of NIfTI masks: world coordinates through the affine, closed outward surfaces, binary STL,
the PNG rendering, whole-or-nothing writes and the errors on bad input."""

from __future__ import annotations

import struct

import nibabel as nib
import numpy as np
import pytest
import trimesh

from tools.commands.mesh import mask_to_mesh, render_mesh_png

SPACING = np.array([0.8, 1.0, 2.0])  # anisotropic voxels, mm
RADIUS = 10.0  # mm
SHAPE = (32, 28, 14)  # radii in voxels 12.5, 10, 5: the sphere fits with >= 2 empty voxels each side
CENTRE_IJK = np.array([15.5, 13.5, 6.5])


def _rotation(deg_z: float = 30.0, deg_x: float = 20.0) -> np.ndarray:
    z, x = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def _affine(mirror: bool) -> np.ndarray:
    """Rotation x anisotropic spacing (x an axis flip when ``mirror``: negative determinant) + a translation."""
    affine = np.eye(4)
    flip = np.diag([-1.0, 1.0, 1.0]) if mirror else np.eye(3)
    affine[:3, :3] = _rotation() @ flip @ np.diag(SPACING)
    affine[:3, 3] = [-120.0, 35.5, 250.0]
    return affine


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _sphere_mask(affine: np.ndarray, centre_ijk=CENTRE_IJK, radius=RADIUS) -> np.ndarray:
    ijk = np.stack(np.indices(SHAPE), axis=-1).reshape(-1, 3).astype(float)
    distance = np.linalg.norm(_world(affine, ijk) - _world(affine, centre_ijk), axis=1)
    return (distance <= radius).reshape(SHAPE)


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.uint8), np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture(params=[False, True], ids=["det>0", "det<0"])
def sphere(request, tmp_path):
    affine = _affine(mirror=request.param)
    return _save(tmp_path / "sphere.nii.gz", _sphere_mask(affine), affine), affine


def test_sphere_vertices_lie_at_radius_from_world_centre_within_a_voxel(sphere, tmp_path):
    mask_path, affine = sphere
    out = tmp_path / "sphere.stl"
    mask_to_mesh(mask_path, out)
    mesh = trimesh.load(str(out), force="mesh")
    distance = np.linalg.norm(mesh.vertices - _world(affine, CENTRE_IJK), axis=1)
    assert np.abs(distance - RADIUS).max() <= SPACING.max()  # the staircase is within one voxel of the sphere
    assert abs(distance.mean() - RADIUS) < 0.5


def test_sphere_mesh_is_closed_with_outward_normals_and_the_sphere_volume(sphere, tmp_path):
    mask_path, affine = sphere
    summary = mask_to_mesh(mask_path, tmp_path / "sphere.stl")
    mesh = trimesh.load(str(tmp_path / "sphere.stl"), force="mesh")
    assert summary["watertight"] and mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0 and summary["volume_mm3"] == pytest.approx(mesh.volume, rel=1e-4)
    assert summary["volume_mm3"] == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.1)
    radial = mesh.triangles_center - _world(affine, CENTRE_IJK)
    outward = np.einsum("ij,ij->i", mesh.face_normals, radial) > 0
    assert outward.mean() > 0.99


def test_stl_is_binary_and_rereads_with_the_same_triangle_count(sphere, tmp_path):
    mask_path, _ = sphere
    out = tmp_path / "sphere.stl"
    summary = mask_to_mesh(mask_path, out)
    raw = out.read_bytes()
    (count,) = struct.unpack("<I", raw[80:84])
    assert count == summary["faces"] > 0 and len(raw) == 84 + 50 * count
    assert len(trimesh.load(str(out), force="mesh").faces) == summary["faces"]


def test_label_selects_one_structure_of_a_labelled_mask(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:8, 2:8, 2:8] = 1  # 6 mm cube at unit spacing
    labels[12:26, 10:20, 3:11] = 2  # 14 x 10 x 8 box
    path = _save(tmp_path / "labels.nii.gz", labels)
    box = mask_to_mesh(path, tmp_path / "box.stl", label=2)
    both = mask_to_mesh(path, tmp_path / "both.stl")
    lo, hi = trimesh.load(str(tmp_path / "box.stl"), force="mesh").bounds
    np.testing.assert_allclose(lo, [11.5, 9.5, 2.5])
    np.testing.assert_allclose(hi, [25.5, 19.5, 10.5])
    assert both["faces"] > box["faces"] and both["volume_mm3"] > box["volume_mm3"]


def test_structure_touching_the_volume_border_still_gets_a_closed_surface(tmp_path):
    path = _save(tmp_path / "full.nii.gz", np.ones((4, 5, 6)))
    assert mask_to_mesh(path, tmp_path / "full.stl")["watertight"]


def test_step_size_gives_a_coarser_mesh(sphere, tmp_path):
    mask_path, _ = sphere
    fine = mask_to_mesh(mask_path, tmp_path / "fine.stl")
    coarse = mask_to_mesh(mask_path, tmp_path / "coarse.stl", step_size=2)
    assert coarse["faces"] < fine["faces"] / 2


def test_render_png_is_a_picture_of_the_mesh(sphere, tmp_path):
    mask_path, _ = sphere
    mask_to_mesh(mask_path, tmp_path / "sphere.stl")
    png = render_mesh_png(tmp_path / "sphere.stl", tmp_path / "docs" / "sphere.png", size_inches=3, dpi=50)
    from matplotlib.image import imread

    pixels = imread(str(png))
    assert pixels.shape[:2] == (150, 150)
    bone = np.abs(pixels[..., :3] - np.array([0.89, 0.85, 0.79])).sum(-1) < 0.5  # shaded surface, not white
    assert (bone & (pixels[..., :3].sum(-1) < 2.9)).mean() > 0.02


# ---------------------------------------------------------------- whole or nothing


def test_failed_write_leaves_existing_output_untouched_and_no_partial_file(sphere, tmp_path, monkeypatch):
    mask_path, _ = sphere
    out = tmp_path / "sphere.stl"
    out.write_bytes(b"previous")

    def broken_write(self, data):
        self.open("wb").write(data[:100])
        raise OSError("disk full")

    monkeypatch.setattr("pathlib.Path.write_bytes", broken_write)
    with pytest.raises(OSError, match="disk full"):
        mask_to_mesh(mask_path, out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sphere.nii.gz", "sphere.stl"]  # no partial file


def test_bad_mask_writes_no_output(tmp_path):
    out = tmp_path / "out.stl"
    with pytest.raises(ValueError):
        mask_to_mesh(_save(tmp_path / "empty.nii.gz", np.zeros(SHAPE)), out)
    assert not out.exists()


# ---------------------------------------------------------------- errors name the file


def test_missing_mask_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        mask_to_mesh(tmp_path / "nope.nii.gz", tmp_path / "out.stl")


def test_corrupt_mask_raises_value_error_naming_it(tmp_path):
    good = _save(tmp_path / "good.nii.gz", np.ones(SHAPE)).read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.nii").write_bytes(b"not a nifti file" * 40)
    for name in ("truncated.nii.gz", "garbage.nii"):
        with pytest.raises(ValueError, match=f"{name}: cannot read as a NIfTI"):
            mask_to_mesh(tmp_path / name, tmp_path / "out.stl")


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 1)], ids=["2-axes", "single-slice"])
def test_2d_image_raises_naming_it(tmp_path, shape):
    path = _save(tmp_path / "slice.nii.gz", np.ones(shape))
    with pytest.raises(ValueError, match="slice.nii.gz is a 2D image"):
        mask_to_mesh(path, tmp_path / "out.stl")


def test_4d_volume_raises_naming_it_but_a_singleton_4th_axis_is_accepted(tmp_path):
    with pytest.raises(ValueError, match="series.nii.gz is a 4D image"):
        mask_to_mesh(_save(tmp_path / "series.nii.gz", np.ones((8, 8, 8, 2))), tmp_path / "out.stl")
    assert mask_to_mesh(_save(tmp_path / "one.nii.gz", np.ones((8, 8, 8, 1))), tmp_path / "out.stl")["faces"] > 0


def test_empty_mask_or_absent_label_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="empty.nii.gz: the mask is empty"):
        mask_to_mesh(_save(tmp_path / "empty.nii.gz", np.zeros(SHAPE)), tmp_path / "out.stl")
    with pytest.raises(ValueError, match=r"no voxel of label 3; values present: \[0, 1\]"):
        mask_to_mesh(_save(tmp_path / "ones.nii.gz", np.eye(8)[:, :, None] * np.ones(8)), tmp_path / "out.stl", label=3)


def test_rejects_non_stl_output_and_bad_step_size(sphere, tmp_path):
    mask_path, _ = sphere
    with pytest.raises(ValueError, match=r"\.stl"):
        mask_to_mesh(mask_path, tmp_path / "sphere.obj")
    with pytest.raises(ValueError, match="step_size"):
        mask_to_mesh(mask_path, tmp_path / "sphere.stl", step_size=0)


def test_render_of_missing_or_corrupt_mesh_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.stl"):
        render_mesh_png(tmp_path / "gone.stl", tmp_path / "x.png")
    (tmp_path / "bad.stl").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="bad.stl"):
        render_mesh_png(tmp_path / "bad.stl", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
