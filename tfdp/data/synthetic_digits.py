"""Public digits made on this machine: font glyphs rendered the way the UCI digits were scanned.

`render_digits(n, seed=...)` draws the ten digits from the fonts that ship inside matplotlib
(DejaVu, STIX and Computer Modern: no download, the same files on every machine), each one
randomly slanted, sheared, thickened and elastically bent like handwriting, then reduced as
the UCI optical digits were: a 32x32 bitmap whose 4x4 blocks are counted into an 8x8 image
of 0..16 ink, scaled to [0, 1]. No example of any private data set is read, so a model
pretrained on these images is a public prior: using it costs no privacy. It is the public
data that tfdp's digits recipe pretrains its feature extractors on
(`tfdp.models.pretrained_linear`).
"""

from __future__ import annotations

import functools
import os
from typing import List, Tuple

import numpy as np

from tfdp._validation import check_positive_int

# Fonts bundled with matplotlib whose digits are upright Arabic numerals (cmmi10's are
# old-style, the STIX size/symbol files have none).
FONT_FILES: Tuple[str, ...] = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic",
    "STIXGeneralBolIta", "cmr10", "cmb10", "cmss10", "cmtt10", "cmti10",
)
_GLYPH_PX = 96  # fonts are drawn large, then bent and reduced
_BITMAP = 32  # the UCI scans' bitmap side
_BLOCK = 4  # 4x4 blocks counted into one pixel: 32 -> 8


@functools.lru_cache(maxsize=1)
def _fonts() -> List["object"]:
    import matplotlib
    from PIL import ImageFont

    folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    paths = [os.path.join(folder, name + ".ttf") for name in FONT_FILES]
    present = [p for p in paths if os.path.exists(p)]
    if not present:
        raise RuntimeError(f"None of matplotlib's bundled fonts were found in {folder}; "
                           "reinstall matplotlib (`make install`).")
    return [ImageFont.truetype(p, _GLYPH_PX) for p in present]


def _glyph(rng: np.random.Generator, digit: int) -> np.ndarray:
    """One digit as a 32x32 boolean bitmap, or an empty array if the draw left no ink."""
    from PIL import Image, ImageDraw

    fonts = _fonts()
    font = fonts[int(rng.integers(len(fonts)))]
    side = 2 * _GLYPH_PX
    image = Image.new("L", (side, side), 0)
    stroke = int(rng.integers(0, 6))  # thickening, in glyph pixels
    ImageDraw.Draw(image).text((_GLYPH_PX // 2, _GLYPH_PX // 4), str(digit), fill=255,
                               font=font, stroke_width=stroke, stroke_fill=255)
    # Slant, shear and stretch: the inverse map PIL's affine transform wants.
    angle = np.deg2rad(rng.uniform(-15.0, 15.0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, rng.uniform(-0.3, 0.3)], [0.0, 1.0]])
    forward = rotation @ shear @ np.diag(np.exp(rng.normal(0.0, 0.15, 2)))
    inverse = np.linalg.inv(forward)
    centre = np.array([side / 2, side / 2])
    offset = centre - inverse @ centre
    image = image.transform(image.size, Image.AFFINE,
                            (inverse[0, 0], inverse[0, 1], offset[0],
                             inverse[1, 0], inverse[1, 1], offset[1]),
                            resample=Image.BILINEAR)
    ink = np.asarray(image) > 127
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        return np.zeros((0, 0), bool)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # Like the UCI scans: the height fills the box (29-32 px), the width follows, at most 32.
    height, width = crop.shape
    scale = min(rng.uniform(29.0, 32.0) / height, _BITMAP / width)
    new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    resized = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize(
        (new_w, new_h), Image.BILINEAR)) > 127
    bitmap = np.zeros((_BITMAP, _BITMAP), bool)
    left = int(np.clip((_BITMAP - new_w) // 2 + rng.integers(-1, 2), 0, _BITMAP - new_w))
    top = int(np.clip((_BITMAP - new_h) // 2 + rng.integers(-1, 2), 0, _BITMAP - new_h))
    bitmap[top:top + new_h, left:left + new_w] = resized
    return bitmap


def _bend(rng: np.random.Generator, bitmap: np.ndarray, strength: float) -> np.ndarray:
    """An elastic distortion (a smooth random displacement field, as in Simard et al. 2003)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    amount = rng.uniform(0.0, strength)
    shift_y = gaussian_filter(rng.uniform(-1, 1, bitmap.shape), 4.0) * amount
    shift_x = gaussian_filter(rng.uniform(-1, 1, bitmap.shape), 4.0) * amount
    grid_y, grid_x = np.meshgrid(np.arange(bitmap.shape[0]), np.arange(bitmap.shape[1]),
                                 indexing="ij")
    return map_coordinates(bitmap.astype(np.float64), [grid_y + shift_y, grid_x + shift_x],
                           order=1) > 0.5


def render_digits(n: int, *, seed: int = 0, elastic: float = 60.0
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """`n` synthetic digits: images [n, 8, 8, 1] float32 in [0, 1] and labels [n] int64.

    Labels are drawn uniformly from 0..9; the same `seed` gives the same images (given the
    same matplotlib fonts and Pillow). `elastic` bounds the elastic distortion's strength in
    bitmap pixels (0 turns it off). Public data: nothing private is read.
    """
    n = check_positive_int("n", n)
    if not elastic >= 0:
        raise ValueError(f"elastic must be >= 0, got {elastic!r}.")
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 8, 8, 1), np.float32)
    labels = np.zeros(n, np.int64)
    made = 0
    while made < n:
        digit = int(rng.integers(10))
        bitmap = _glyph(rng, digit)
        if bitmap.size == 0:
            continue
        if elastic > 0:
            bitmap = _bend(rng, bitmap, elastic)
        counts = bitmap.reshape(8, _BLOCK, 8, _BLOCK).sum(axis=(1, 3))
        images[made, :, :, 0] = counts / float(_BLOCK * _BLOCK)
        labels[made] = digit
        made += 1
    return images, labels
