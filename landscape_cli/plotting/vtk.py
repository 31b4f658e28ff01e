"""A 2D surface as VTK PolyData (XML, ASCII .vtp) for ParaView: one point per finite grid value, one quad
per grid cell whose four corners are all finite."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from .style import STAMP
from .surface_data import grid_xyz


def surface_polydata(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (n, 3) = (x, y, z) of the finite values in row-major grid order, and the quads (m, 4) as
    indices into them, counter-clockwise seen from +z when x and y ascend; and the kept values' grid mask."""
    xx, yy, zz = grid_xyz(x, y, z)
    keep = np.isfinite(zz)
    index = np.full(zz.shape, -1, dtype=np.int64)
    index[keep] = np.arange(int(keep.sum()))
    points = np.column_stack([xx[keep], yy[keep], zz[keep]])
    corners = np.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]], axis=-1).reshape(-1, 4)
    quads = corners[np.all(corners >= 0, axis=1)]
    return points, quads, keep


def write_vtp(path: Path, x: np.ndarray, y: np.ndarray, z: np.ndarray, name: str) -> tuple[int, int]:
    """Write the surface z (shape (len(y), len(x))) at `path` (callers see to atomicity), its height and
    its point data both z, the data named `name`. Returns the numbers of points and quads written."""
    points, quads, _ = surface_polydata(x, y, z)
    n, m = len(points), len(quads)

    def numbers(values: np.ndarray, fmt: str) -> str:
        return "\n".join(" ".join(fmt % v for v in row) for row in np.atleast_2d(values))

    lines = [
        '<?xml version="1.0"?>',
        f"<!-- {STAMP} -->",
        '<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian" header_type="UInt64">',
        "  <PolyData>",
        f'    <Piece NumberOfPoints="{n}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" NumberOfPolys="{m}">',
        f"      <PointData Scalars={quoteattr(name)}>",
        f'        <DataArray type="Float64" Name={quoteattr(name)} NumberOfComponents="1" format="ascii">',
        numbers(points[:, 2].reshape(-1, 1), "%.17g") if n else "",
        "        </DataArray>",
        "      </PointData>",
        "      <Points>",
        '        <DataArray type="Float64" Name="Points" NumberOfComponents="3" format="ascii">',
        numbers(points, "%.17g") if n else "",
        "        </DataArray>",
        "      </Points>",
        "      <Polys>",
        '        <DataArray type="Int64" Name="connectivity" format="ascii">',
        numbers(quads, "%d") if m else "",
        "        </DataArray>",
        '        <DataArray type="Int64" Name="offsets" format="ascii">',
        numbers(4 * np.arange(1, m + 1).reshape(-1, 1), "%d") if m else "",
        "        </DataArray>",
        "      </Polys>",
        "    </Piece>",
        "  </PolyData>",
        "</VTKFile>",
        "",
    ]
    path.write_text("\n".join(lines), encoding="ascii")
    return n, m
