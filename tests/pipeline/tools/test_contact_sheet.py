"""The contact sheet: a title and legend above the samples, one cell per sample."""

import numpy as np

from pipeline.tools.contact_sheet import CAPTION, COLUMNS, HEADER, TILE, render_contact_sheet


def test_the_sheet_has_a_title_band_and_a_cell_per_sample(synthetic_store):
    indices = np.arange(7)
    sheet = render_contact_sheet(synthetic_store, indices)
    rows = -(-len(indices) // COLUMNS)
    assert sheet.shape == (HEADER + rows * (TILE + CAPTION), COLUMNS * 4 * TILE, 3)
    band = sheet[:HEADER]
    assert (band[:40] < 128).any() and (band[-1] == 0).all()  # text in the band, a line under it
