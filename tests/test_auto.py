"""boundary='auto' and shape=None (kernelfit.auto): the choices, their evidence, composition
with the other options, the errors, and the command line without --shape."""

import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage

import kernelfit as kf
from kernelfit.front import auto
from kernelfit.select import shape as shape_choice
from kernelfit import cli
from kernelfit.demo import EDITOR_MATRIX

RULES = ("fill", "wrap", "reflect", "nearest", "mirror")
# An asymmetric 3x5 kernel: a fit in the wrong orientation, or with a rule that shifts the
# border by a pixel (reflect vs mirror), cannot match it.
K35 = np.array([[0.00, 0.05, 0.10, 0.05, 0.00],
                [0.05, 0.10, 0.25, 0.10, 0.02],
                [0.00, 0.03, 0.15, 0.10, 0.00]])


def texture(shape, seed, smooth=1.0):
    """A photo stand-in: white noise smoothed to a correlation length of ``smooth`` pixels,
    scaled to [0, 1] (textured everywhere, including every edge)."""
    image = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), smooth)
    return (image - image.min()) / np.ptp(image)


def blurred(a, k, boundary, *, noise=2e-3, seed=1, **options):
    b = kf.convolve(a, k, boundary=boundary, **options)
    return b + noise * np.random.default_rng(seed).standard_normal(b.shape)


def assert_within_errors(fit, k):
    """Every coefficient within 5 of its standard errors of the truth (for 15-50
    coefficients a false alarm has odds of about 1e-5)."""
    assert fit.stderr is not None and np.all(np.isfinite(fit.stderr))
    z = np.abs(fit.kernel - k) / fit.stderr
    assert z.max() < 5.0, z.max()


def gaussian(sigma):
    r = int(4 * sigma + 0.5)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    k = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return k / k.sum()


def motion(length, degrees):
    """A line through the centre, bilinearly splatted, cut to its non-zero rows/columns
    (kept odd and centred)."""
    r = length // 2 + 2
    k = np.zeros((2 * r + 1, 2 * r + 1))
    t = np.deg2rad(degrees)
    for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, 40 * length):
        y, x = r - s * np.sin(t), r + s * np.cos(t)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        k[y0:y0 + 2, x0:x0 + 2] += np.outer([1 - fy, fy], [1 - fx, fx])
    rows, cols = np.nonzero(k)
    ry, rx = max(r - rows.min(), rows.max() - r), max(r - cols.min(), cols.max() - r)
    k = k[r - ry:r + ry + 1, r - rx:r + rx + 1]
    return k / k.sum()


def disk(radius):
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    k = (x * x + y * y <= radius * radius).astype(float)
    return k / k.sum()


def support(k, level=1e-3):
    """(rows, columns) of the bounding box of |k| > level·max|k| (the benchmark's 'true
    support')."""
    rows, cols = np.nonzero(np.abs(k) > level * np.abs(k).max())
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def energy_covered(k_true, shape, center):
    """Share of Σk² of ``k_true`` (centred in its array) inside the window ``shape`` whose
    output pixel is ``center``."""
    c = ((k_true.shape[0] - 1) // 2, (k_true.shape[1] - 1) // 2)
    rows = np.arange(k_true.shape[0]) - c[0]
    cols = np.arange(k_true.shape[1]) - c[1]
    inside = np.ix_((rows >= -center[0]) & (rows < shape[0] - center[0]),
                    (cols >= -center[1]) & (cols < shape[1] - center[1]))
    return float((k_true[inside] ** 2).sum() / (k_true ** 2).sum())


# --------------------------------------------------------------------------------------------
# boundary='auto'
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_auto_boundary_finds_the_rule_that_made_b(rule):
    a = texture((48, 56), seed=3)
    b = blurred(a, K35, rule)
    fit = kf.estimate(a, b, K35.shape, boundary="auto")
    record = fit.info["boundary_scores"]
    assert fit.boundary == rule == record["chosen"]
    assert record["candidates"] == list(RULES)
    scores = dict(zip(record["candidates"], record["scores"]))
    # The true rule's border residual is noise: its mean square over the interior noise
    # variance is 1 within the scatter of a mean over ~400 pixels (±0.1) plus the kernel's
    # estimation error at the border; every other rule misses by more at a textured edge.
    assert scores[rule] < 1.5
    assert min(s for r, s in scores.items() if r != rule) > 2 * scores[rule]
    # The refit uses every pixel of b.
    assert fit.n_used == b.size
    assert_within_errors(fit, K35)


def test_auto_boundary_refit_is_as_good_as_knowing_the_rule():
    a = texture((48, 48), seed=4)
    b = blurred(a, K35, "mirror")
    fit = kf.estimate(a, b, K35.shape, boundary="auto")
    known = kf.estimate(a, b, K35.shape, boundary="mirror")
    # The same fit: the choice adds nothing but the evidence.
    np.testing.assert_array_equal(fit.kernel, known.kernel)


def test_cropped_b_falls_back_to_valid():
    big = texture((72, 72), seed=5)
    b_big = blurred(big, K35, "reflect")
    a, b = big[10:-10, 10:-10], b_big[10:-10, 10:-10]  # the border saw pixels a lacks
    fit = kf.estimate(a, b, K35.shape, boundary="auto")
    record = fit.info["boundary_scores"]
    assert fit.boundary == "valid" == record["chosen"]
    assert min(record["scores"]) > auto.BORDER_EXPLAINED
    assert "no edge rule explains the border" in fit.message
    assert "no edge rule explains the border" in record["message"]
    valid = kf.estimate(a, b, K35.shape, boundary="valid")
    np.testing.assert_array_equal(fit.kernel, valid.kernel)


def test_valid_sized_b_has_no_border_to_score():
    a = texture((40, 40), seed=6)
    b = blurred(a, K35, "valid")
    fit = kf.estimate(a, b, K35.shape, boundary="auto")
    assert fit.boundary == "valid"
    assert fit.info["boundary_scores"]["candidates"] == []
    assert "no border" in fit.info["boundary_scores"]["message"]


def test_full_sized_b_is_scored_on_its_wide_border():
    a = texture((40, 44), seed=7)
    b = blurred(a, K35, "nearest", mode="full")
    fit = kf.estimate(a, b, K35.shape, boundary="auto")
    assert fit.boundary == "nearest"
    assert fit.n_used == b.size


def test_noise_free_data_are_recovered_exactly():
    a = texture((40, 40), seed=8)
    b = kf.convolve(a, K35, boundary="reflect")
    fit = kf.estimate(a, b, None, boundary="auto")
    assert (fit.shape, fit.center, fit.boundary) == ((3, 5), (1, 2), "reflect")
    # Exact data: what is left is rounding, ~1e-16 of the kernel's scale, amplified by the
    # conditioning of a smooth texture's Gram matrix.
    np.testing.assert_allclose(fit.kernel, K35, atol=1e-9)


def test_auto_boundary_with_a_background_extrapolates_it_to_the_border():
    a = texture((48, 48), seed=9)
    y, x = np.mgrid[:48, :48] / 47.0
    b = blurred(a, K35, "wrap") + 0.3 + 0.2 * x - 0.1 * y  # a tilted sky
    fit = kf.estimate(a, b, K35.shape, boundary="auto", background=1)
    assert fit.boundary == "wrap"
    # Without the background's continuation the plane would dominate the border residual.
    assert fit.info["boundary_scores"]["scores"][RULES.index("wrap")] < 1.5
    assert_within_errors(fit, K35)


def test_auto_boundary_honours_the_mask_and_lists_of_pairs():
    a1, a2 = texture((40, 40), seed=10), texture((40, 40), seed=11)
    b1, b2 = blurred(a1, K35, "mirror", seed=2), blurred(a2, K35, "mirror", seed=3)
    b1[0, :] = 50.0  # a ruined top row, masked out
    mask1 = np.ones(b1.shape, bool)
    mask1[0, :] = False
    fit = kf.estimate([a1, a2], [b1, b2], K35.shape, boundary="auto",
                      mask=[mask1, None])
    assert fit.boundary == "mirror"
    assert fit.n_used == b1.size + b2.size - b1.shape[1]


def test_unknown_boundary_names_are_still_refused():
    a = texture((20, 20), seed=0)
    with pytest.raises(ValueError, match=r"boundary='sideways' is not a known boundary mode"):
        kf.estimate(a, a, 3, boundary="sideways")
    with pytest.raises(ValueError, match=r"boundary='sideways' is not a known boundary mode"):
        kf.estimate(a, a, None, boundary="sideways")
    with pytest.raises(ValueError, match=r"boundary='auto' is chosen from the data by "
                                         r"kernelfit\.estimate only"):
        kf.convolve(a, K35, boundary="auto")


# --------------------------------------------------------------------------------------------
# shape=None
# --------------------------------------------------------------------------------------------

KERNELS = {
    "gaussian-0.8": gaussian(0.8),
    "gaussian-2": gaussian(2.0),
    "box-3x7": np.full((3, 7), 1 / 21),
    "disk-2.5": disk(2.5),
    "motion-9-at-30": motion(9, 30),
    "asymmetric": K35,
}


@pytest.mark.parametrize("k", KERNELS.values(), ids=KERNELS.keys())
def test_chosen_window_covers_the_kernel_and_not_much_more(k):
    a = texture((72, 72), seed=12, smooth=0.8)
    fit = kf.estimate(a, blurred(a, k, "reflect"), None)
    # The acceptance criteria of issue 6: >= 99 % of the energy, at most 4 pixels wider than
    # the support (pixels above 1e-3 of the peak) in each direction.
    assert energy_covered(k, fit.shape, fit.center) >= 0.99
    rows, cols = support(k)
    assert fit.shape[0] <= rows + 4 and fit.shape[1] <= cols + 4
    record = fit.info["shape_scores"]
    assert record["chosen"] in record["candidates"]
    assert len(record["scores"]) == len(record["candidates"])
    # The lowest score, or a smaller window within the tolerance of it.
    lowest = min(record["scores"])
    chosen = record["scores"][record["candidates"].index(record["chosen"])]
    assert chosen <= lowest + shape_choice.SCORE_TOLERANCE * max(lowest, 1.0)
    assert np.abs(fit.info["kernel_offset"]).max() < 0.5  # centred kernels


def test_offset_kernel_is_found_and_reported():
    a = texture((80, 80), seed=13)
    k = np.zeros((21, 21))
    k[10 + 7 - 1:10 + 7 + 2, 10 - 5 - 1:10 - 5 + 2] = K35[:, 1:4] / K35[:, 1:4].sum()
    b = blurred(a, k, "reflect")
    fit = kf.estimate(a, b, None)
    # The window reaches from the output pixel to the kernel, the centre points at the first.
    assert energy_covered(k, fit.shape, fit.center) >= 0.99
    assert fit.shape[0] <= 7 + 2 + 4 and fit.shape[1] <= 5 + 2 + 4
    # The energy centroid of the 3x3 block, about (+7, −5) (its rows are not symmetric).
    centroid = np.array(auto.kernel_offset(k, (10, 10)))
    np.testing.assert_allclose(fit.info["kernel_offset"], centroid, atol=0.05)
    assert fit.info["shape_scores"]["probe_shift"] == [7, -5]


def test_kernel_larger_than_the_first_probe_grows_the_window():
    a = texture((112, 112), seed=14, smooth=0.7)
    k = gaussian(2.8)  # support 21x21 at 1e-3 of the peak, wider than the first probe
    fit = kf.estimate(a, blurred(a, k, "reflect"), None)
    assert fit.info["shape_scores"]["probe"] != f"{shape_choice.PROBE_SIZE}x{shape_choice.PROBE_SIZE}"
    assert energy_covered(k, fit.shape, fit.center) >= 0.99
    assert max(fit.shape) <= max(support(k)) + 4


def test_valid_and_full_sized_b_fix_the_shape():
    a = texture((40, 40), seed=15)
    fit = kf.estimate(a, blurred(a, K35, "valid"), None)
    assert fit.shape == (3, 5)
    assert fit.info["shape_scores"]["message"] == "fixed by the size of b relative to a"
    fit = kf.estimate(a, blurred(a, K35, "fill", mode="full"), None, boundary="fill")
    assert fit.shape == (3, 5)
    assert_within_errors(fit, K35)


def test_shape_none_composes_with_the_other_options():
    a = texture((64, 64), seed=16)
    k = gaussian(1.2)
    b = blurred(a, k, "nearest")
    fit = kf.estimate(a, b, None, boundary="auto", model="gaussian", normalize=1.0)
    assert fit.boundary == "nearest" and fit.model == "gaussian"
    # σ from ~4000 pixels at noise 2e-3: a few 1e-3 at most.
    assert abs(fit.params["sigma"] - 1.2) < 0.01
    assert energy_covered(k, fit.shape, fit.center) >= 0.99
    fit = kf.estimate(a, b, None, boundary="auto", nonneg=True, normalize=1.0)
    assert fit.kernel.min() >= 0 and abs(fit.kernel.sum() - 1) < 1e-10
    fit = kf.estimate(a, b, None, boundary="auto", reg="laplacian")
    assert fit.lam > 0 and "lambda_selection" in fit.info
    assert fit.boundary == "nearest"


@pytest.mark.parametrize("options, method", [
    ({"method": "iterative", "tol": 1e-10}, "iterative"), ({"loss": "huber"}, "irls-huber"),
    ({"model": "separable"}, None), ({"model": "gaussian", "loss": "l1"}, "parametric-l1"),
])
def test_both_choices_compose_with_solvers_and_losses(options, method):
    a = texture((64, 64), seed=16, smooth=0.5)
    fit = kf.estimate(a, blurred(a, K35, "nearest"), None, boundary="auto", **options)
    assert (fit.shape, fit.center, fit.boundary) == ((3, 5), (1, 2), "nearest")
    assert method is None or fit.method == method


def test_shape_none_with_a_background_mask_and_nan():
    a = texture((64, 64), seed=17)
    b = blurred(a, K35, "reflect") + 0.5
    b[20:30, 20:30] = np.nan
    mask = np.ones(b.shape, bool)
    mask[40:, :8] = False
    fit = kf.estimate(a, b, None, boundary="auto", background=0, mask=mask)
    assert (fit.shape, fit.center, fit.boundary) == ((3, 5), (1, 2), "reflect")
    assert abs(fit.background[0] - 0.5) < 0.01  # the offset, to a few noise/√n
    assert not fit.info["used"][25, 25] and not fit.info["used"][50, 3]


def test_results_stay_json_safe(tmp_path):
    a = texture((40, 40), seed=18)
    fit = kf.estimate(a, blurred(a, K35, "wrap"), None, boundary="auto")
    fit.save(tmp_path / "fit.json")
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["info"]["boundary_scores"]["chosen"] == "wrap"
    assert saved["info"]["shape_scores"] == fit.info["shape_scores"]
    assert saved["shape"] == list(fit.shape) and saved["center"] == list(fit.center)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_errors_are_clear():
    a = texture((40, 40), seed=19)
    with pytest.raises(ValueError, match=r"center=\(1, 1\) is an index into a kernel of a "
                                         r"given size; with shape=None"):
        kf.estimate(a, a, None, center=(1, 1))
    with pytest.raises(ValueError, match=r"shape=None: a is 6x6, too small to choose a "
                                         r"kernel size from; pass shape="):
        kf.estimate(a[:6, :6], a[:6, :6], None)
    with pytest.raises(ValueError, match=r"b has shape \(38, 42\) and a \(40, 40\): with "
                                         r"shape=None b must be like a"):
        kf.estimate(a, np.ones((38, 42)), None)
    with pytest.raises(ValueError, match=r"with shape=None every b must imply the same "
                                         r"kernel size"):
        kf.estimate([a, a], [a, a[:36, :36]], None)
    with pytest.raises(ValueError, match=r"a and b must both be images, or lists of the same"):
        kf.estimate([a, a], [a], None)
    # Options are checked before the search, not after it.
    with pytest.raises(ValueError, match=r"model='gauss' is not available"):
        kf.estimate(a, a, None, model="gauss")
    with pytest.raises(ValueError, match=r"background=-1 must be None or a non-negative"):
        kf.estimate(a, a, None, background=-1)
    with pytest.raises(ValueError, match=r"lam=0\.1 is given but reg=None"):
        kf.estimate(a, a, 3, boundary="auto", lam=0.1)


# --------------------------------------------------------------------------------------------
# Command line: seed 001 without --shape
# --------------------------------------------------------------------------------------------


def test_cli_seed_001_without_shape(tmp_path, capsys):
    """Seed 001's data (the demo's): the camera photo, the editor's 5x5 matrix, edges
    extended, 8-bit; only the two PNG files are given."""
    from skimage import data

    photo = data.camera()
    k = EDITOR_MATRIX / EDITOR_MATRIX.sum()
    b = np.clip(np.rint(kf.convolve(photo, k, boundary="nearest")), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", photo)
    iio.imwrite(tmp_path / "b.png", b)
    status = cli.main(["estimate", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                       "--boundary", "auto", "-o", str(tmp_path / "k.npy"),
                       "--json", str(tmp_path / "fit.json")])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert re.search(r"free kernel 5x5, center \(2, 2\), boundary 'nearest'", out), out
    # Seed 001's target: relative error <= 0.005 (8-bit rounding on 512² pixels).
    kernel = np.load(tmp_path / "k.npy")
    assert np.linalg.norm(kernel - k) / np.linalg.norm(k) <= 0.005
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["info"]["boundary_scores"]["chosen"] == "nearest"


def test_cli_refuses_automatic_choices_when_tiled(tmp_path, capsys):
    a = texture((24, 24), seed=20)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a)
    status = cli.main(["estimate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"),
                       "--tile", "16", "-o", str(tmp_path / "k.npy")])
    err = capsys.readouterr().err
    assert status == 2
    assert "--tile and --scheduler need --shape and a named --boundary" in err
    assert not (tmp_path / "k.npy").exists()


def test_report_draws_both_choices(tmp_path):
    pytest.importorskip("matplotlib")
    a = texture((48, 48), seed=21, smooth=0.5)
    b = blurred(a, K35, "nearest")
    fit = kf.estimate(a, b, None, boundary="auto")
    fit.report(tmp_path / "r.html", a=a, b=b)
    html = (tmp_path / "r.html").read_text()
    # report.py draws every info dict ending in _scores that has candidates/scores/chosen.
    assert "shape scores" in html and "boundary scores" in html


def test_summary_says_what_was_chosen():
    rng = np.random.default_rng(12)
    a = rng.random((60, 60))
    k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 3.0, 2.0, 1.0]) / 36
    b = kf.convolve(a, k, boundary="reflect") + 1e-3 * rng.standard_normal(a.shape)
    text = kf.estimate(a, b, None, boundary="auto").summary()
    assert "size chosen: 3x5 of" in text and "boundary chosen: 'reflect'" in text
    assert "chosen" not in kf.estimate(a, b, (3, 5), boundary="reflect").summary()


def _imagemagick_truncated(seed=0):
    """ImageMagick's -morphology Convolve on an 8-bit image truncates toward zero (the rule
    reimplemented: floor of the exact convolution, nearest-edge extension): b is offset by
    −½ on average."""
    from skimage import data

    a = data.camera()[100:356, 100:356]
    m = np.array([[0, 1, 2, 1, 0], [1, 3, 5, 3, 1], [2, 5, 9, 5, 2], [1, 3, 5, 3, 1],
                  [0, 1, 2, 1, 0]])
    b = np.floor(kf.convolve(a.astype(float), m / m.sum(), boundary="nearest"))
    return a, np.clip(b, 0, 255).astype(np.uint8), m


def test_auto_mode_finds_the_offset_of_8_bit_truncation():
    a, b, m = _imagemagick_truncated()
    fit = kf.estimate(a, b, None, boundary="auto")
    assert fit.shape == (5, 5) and fit.boundary == "nearest"
    assert fit.info["offset_choice"]["chosen"] == "background=0"
    # Truncation subtracts a uniform [0, 1) rounding error: −½ on average.
    assert fit.background[0] == pytest.approx(-0.5, abs=0.02)
    matrix = fit.as_integer_matrix()
    assert matrix.matrix.tolist() == m.tolist() and matrix.divisor == m.sum()
    assert "constant offset" in fit.message


def test_auto_mode_adds_no_offset_when_there_is_none():
    rng = np.random.default_rng(7)
    a = rng.random((96, 96))
    b = kf.convolve(a, np.full((3, 3), 1 / 9), boundary="nearest")
    b = b + 1e-3 * rng.normal(size=b.shape)
    fit = kf.estimate(a, b, None, boundary="auto")
    assert fit.background is None and "offset_choice" not in fit.info
