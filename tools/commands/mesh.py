"""Surface meshes of segmentation masks: :func:`mask_to_mesh` (NIfTI mask -> binary STL in world millimetres)
and :func:`render_mesh_png` (a shaded picture of a mesh, for documentation).

The surface is extracted by marching cubes (``skimage.measure.marching_cubes``) on the voxel grid, its
vertices mapped to world coordinates by the NIfTI affine (so rotations, anisotropic spacing and axis flips
are all honoured), and its triangles wound counter-clockwise seen from outside (outward normals, positive
volume), also when the affine has a negative determinant. Both writers go through :func:`tools.io.atomic_path`:
the file is written whole or not at all.

Command line (planned): ``python -m tools mesh MASK --output spine.stl [--png spine.png] [--label N]``.
"""

from __future__ import annotations

import json
import sys

from pathlib import Path

import nibabel as nib
import numpy as np
import trimesh
from skimage.measure import marching_cubes

from tools.io import atomic_path

__all__ = ["load_mask_volume", "mask_to_mesh", "render_mesh_png"]


def load_mask_volume(mask_path: str | Path, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI mask as a boolean volume and its 4 x 4 voxel-to-world (mm) affine.

    Args:
        mask_path: a NIfTI file (``.nii`` or ``.nii.gz``), binary or labelled.
        label: the label to keep (``mask == label``); ``None`` keeps every non-zero voxel.

    Returns:
        ``(mask, affine)``: a boolean array of shape ``(X, Y, Z)`` and the image's affine.

    Raises:
        FileNotFoundError: if ``mask_path`` does not exist.
        ValueError: naming the file, if it cannot be read as NIfTI (corrupt or truncated), is 2D (two axes, or a
            spatial axis of size 1), has more than three non-singleton axes (a 4D series or multi-channel
            volume), or holds no voxel of ``label`` (no non-zero voxel when ``label`` is ``None``).
    """
    path = Path(mask_path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {path} does not exist.")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib and gzip errors, ValueError...
        raise ValueError(f"{path}: cannot read as a NIfTI image ({type(e).__name__}: {e}).") from e
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1): a 3D volume stored with a singleton 4th axis
        data = data[..., 0]
    if data.ndim < 3 or min(data.shape) == 1:
        raise ValueError(f"{path} is a 2D image (shape {shape}); a surface mesh needs a 3D mask volume.")
    if data.ndim > 3:
        raise ValueError(
            f"{path} is a {data.ndim}D image (shape {shape}); give one 3D mask volume, not a series or channels."
        )
    mask = data != 0 if label is None else data == label
    if not mask.any():
        what = "non-zero voxel" if label is None else f"voxel of label {label}"
        present = np.unique(data)
        raise ValueError(f"{path}: the mask is empty (no {what}; values present: {present[:10].tolist()}).")
    return mask, affine


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume of a closed triangle mesh (divergence theorem): positive when the normals point outward."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->", v0, np.cross(v1, v2)) / 6.0)


def mask_to_mesh(
    mask_path: str | Path, output_path: str | Path, label: int | None = None, step_size: int = 1
) -> dict:
    """Write the surface of a NIfTI mask as a binary STL triangle mesh in world coordinates (mm).

    The mask is padded by one empty voxel on every side (so that a structure touching the border still has a
    closed surface) and the 0.5 iso-surface of the boolean volume is extracted by marching cubes (Lewiner)
    on the voxel grid; its vertices, in voxel indices, are mapped through the NIfTI affine (the sform, else
    the qform) to millimetres. The surface is closed, and its triangles are oriented so that the normals
    point outward whatever the sign of the affine's determinant (an axis flip mirrors the surface, which
    reverses the winding; it is reversed back). No smoothing is applied: the surface follows the voxel
    staircase, with vertices on the faces between voxels.

    Args:
        mask_path: NIfTI mask (``.nii``/``.nii.gz``), binary or labelled, 3D.
        output_path: the ``.stl`` file to write (binary STL); its folder is created if needed.
        label: the label to mesh; ``None`` (default) meshes every non-zero voxel as one structure.
        step_size: marching-cubes step in voxels (1: full resolution; 2 or more: a coarser, smaller mesh).

    Returns:
        A summary: ``{"output", "vertices", "faces", "volume_mm3", "area_mm2", "watertight"}``.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_mask_volume` (missing, unreadable, 2D, 4D or empty mask).
        ValueError: if ``output_path`` does not end in ``.stl`` or ``step_size < 1``.
    """
    output = Path(output_path)
    if output.suffix.lower() != ".stl":
        raise ValueError(f"output {output} must be an .stl file.")
    if step_size < 1:
        raise ValueError(f"step_size must be >= 1, got {step_size}.")
    mask, affine = load_mask_volume(mask_path, label)
    padded = np.pad(mask, 1).astype(np.float32)
    vertices, faces, _, _ = marching_cubes(padded, level=0.5, step_size=step_size, allow_degenerate=False)
    vertices = vertices.astype(np.float64) - 1.0  # undo the padding: voxel indices of the mask
    if _signed_volume(vertices, faces) < 0:  # wind counter-clockwise seen from outside, in index space
        faces = faces[:, ::-1]
    world = vertices @ affine[:3, :3].T + affine[:3, 3]
    if np.linalg.det(affine[:3, :3]) < 0:  # a mirroring affine reverses the winding: reverse it back
        faces = faces[:, ::-1]
    mesh = trimesh.Trimesh(world, np.ascontiguousarray(faces), process=False)
    data = mesh.export(file_type="stl")  # binary STL
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return {
        "output": str(output),
        "vertices": int(len(mesh.vertices)),
        "faces": int(len(mesh.faces)),
        "volume_mm3": float(mesh.volume),
        "area_mm2": float(mesh.area),
        "watertight": bool(mesh.is_watertight),
    }


def _load_mesh(mesh_path: str | Path) -> trimesh.Trimesh:
    path = Path(mesh_path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path} does not exist.")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as e:
        raise ValueError(f"{path}: cannot read as a mesh ({type(e).__name__}: {e}).") from e
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"{path}: holds no triangles.")
    return mesh


def render_mesh_png(
    mesh_path: str | Path,
    png_path: str | Path,
    elev: float = 20.0,
    azim: float = -60.0,
    size_inches: float = 6.0,
    dpi: int = 100,
    color: tuple[float, float, float] = (0.89, 0.85, 0.79),
) -> Path:
    """Render a mesh file (STL, or any format trimesh reads) to a PNG: flat-shaded triangles, equal mm axes.

    Drawn with matplotlib's object API (``Figure`` + Agg canvas; no pyplot, no global backend change) as a
    ``Poly3DCollection``, Lambert-shaded by a light at the camera. Matplotlib draws every triangle, so a
    full-resolution mesh of a whole spine (about a million triangles) takes tens of seconds; mesh with
    ``step_size=2`` for a quicker picture.

    Args:
        mesh_path: the mesh to draw.
        png_path: the PNG to write (whole or not at all); its folder is created if needed.
        elev, azim: camera elevation and azimuth in degrees (matplotlib's ``view_init``); the axes are the
            world's (RAS+ mm for a NIfTI-derived mesh).
        size_inches, dpi: figure side and resolution (default 600 x 600 pixels).
        color: base RGB colour of the surface (bone).

    Returns:
        ``Path(png_path)``.

    Raises:
        FileNotFoundError: if ``mesh_path`` does not exist.
        ValueError: naming the file, if it cannot be read or holds no triangles.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    mesh = _load_mesh(mesh_path)
    triangles = mesh.vertices[mesh.faces]
    e, a = np.deg2rad(elev), np.deg2rad(azim)
    towards_camera = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    lambert = np.clip(mesh.face_normals @ towards_camera, 0.0, 1.0)
    shade = (0.25 + 0.75 * lambert)[:, None] * np.asarray(color)[None, :]

    fig = Figure(figsize=(size_inches, size_inches), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="3d")
    ax.add_collection3d(Poly3DCollection(triangles, facecolors=shade, edgecolors="none"))
    lo, hi = mesh.bounds
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(np.maximum(hi - lo, 1e-6))
    ax.view_init(elev=elev, azim=azim)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.set_title(Path(mesh_path).name)
    out = Path(png_path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


# ---------------------------------------------------------------- the command line (python -m tools mesh)


def mesh_command(mask: str, output: str, png: str | None = None, label: int | None = None, step_size: int = 1) -> str:
    """Write the surface of a NIfTI mask as binary STL in world coordinates (mm); optionally a PNG rendering.

    Prints a JSON summary of the mesh. Exits 1 with a message on a bad input.

    Args:
        mask: NIfTI mask (binary or labelled).
        output: the STL file to write (whole or not at all).
        png: also render the mesh to this PNG.
        label: mesh only this label value (default: every non-zero voxel).
        step_size: marching-cubes step in voxels (2 makes a spine mesh about 4x smaller and faster to render).
    """
    try:
        summary = mask_to_mesh(mask, output, label=label, step_size=step_size)
        if png:
            summary["png"] = str(render_mesh_png(output, png))
    except (OSError, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    return json.dumps(summary, indent=2, default=str)
