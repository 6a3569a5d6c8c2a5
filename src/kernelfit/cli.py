"""The ``kernelfit`` command line: ``estimate``, ``apply`` and ``demo``.

Errors a user can cause (a missing or unreadable file, a bad option value or a misspelt
option, a fit that cannot be done, a full disk) are reported as one line,
``kernelfit: error: <message>``, on stderr with exit status 2 and no traceback.  Warnings
(``kernelfit: warning: ...``, one line each, including what libraries log) are printed when
the run succeeds; a failed run prints only its error.

Outputs: a run leaves all of its outputs (kernel, ``--json``, ``--report``) or none.  They are
written to temporary files beside their destinations once the work has succeeded and renamed
together at the end; a failure, SIGINT or SIGTERM removes the temporary files, and an
interrupted run says so in one line (``kernelfit: interrupted by SIGTERM; no output was
written``) with exit status 130 (SIGINT) or 143 (SIGTERM).  An output path that is one of the
run's inputs (through a symbolic or hard link too) is refused before anything is read.

Every image is read under one pixel limit, checked from the file's header before decoding
(``--max-pixels N``; default :data:`kernelfit.io.MAX_PIXELS`, 16384 x 16384).

Progress lines (``kernelfit: reading A.png`` ...) go to stderr for images over a megapixel or
with ``--verbose``; ``--quiet`` silences them and the fit summary (warnings still show).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings

import numpy as np

from . import io

# Images larger than this get progress lines even without --verbose: below it a run takes
# well under a second and the lines would only be noise.
LARGE_IMAGE_PIXELS = 1_000_000

# What a user's input can make the reading, validation and fitting code raise.  Anything else
# is a bug in kernelfit and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, MemoryError)

_EPILOG = """\
examples:
  kernelfit estimate sharp.png blurred.png --shape 5x5 --boundary nearest -o kernel.csv
  kernelfit estimate sharp.png blurred.png --shape 5x5 -o kernel.npy --report report.html
  kernelfit estimate sharp.png blurred.png --boundary auto -o kernel.npy   # size, rule chosen
  kernelfit apply sharp.png kernel.csv -o predicted.png --boundary nearest
  kernelfit demo
"""


def main(argv=None) -> int:
    """Run the command line; return the exit status.

    0: success (for ``estimate``, a fit whose verdict is ``'ok'``); 2: an error (nothing
    written); 3: the fit's verdict is ``'doubtful'`` (outputs written; 4 with ``--strict``);
    4: the fit's verdict is ``'failed'`` (outputs written, for inspection); 130: interrupted
    by SIGINT, 143 by SIGTERM (nothing written).  See :mod:`kernelfit.fit.verdict`.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Examples
    --------
    >>> main(["estimate", "missing.png", "b.png", "--shape", "3", "-o", "k.npy"])
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    # Warnings, and what libraries log (tifffile reports damaged tags that way), are held
    # back: on success each becomes one "kernelfit: warning:" line; a failed run prints only
    # its error, since the complaints on the way to it would turn one line into several.
    logged = _LogRecords()
    root = logging.getLogger()
    root.addHandler(logged)
    try:
        with warnings.catch_warnings(record=True) as caught, _signals_raise():
            warnings.simplefilter("always")
            try:
                with _thread_limit(args):
                    status = args.handler(args)
            except USER_ERRORS as exc:
                print(f"kernelfit: error: {_one_line(exc)}", file=sys.stderr)
                return 2
            except (KeyboardInterrupt, Interrupted) as exc:
                signum = getattr(exc, "signum", signal.SIGINT)
                print(f"kernelfit: {_interrupted(signum, args)}", file=sys.stderr)
                return 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    finally:
        root.removeHandler(logged)
    _print_warnings([_one_line(w.message) for w in caught] + logged.messages)
    return status


def _thread_limit(args):
    """``--threads N`` as :func:`kernelfit.threads` around the whole command."""
    from .core.threads import threads

    return threads(args.threads) if args.threads else contextlib.nullcontext()


class Interrupted(BaseException):
    """SIGTERM or SIGINT, raised in the main thread so that the run's clean-up runs (a
    BaseException, like KeyboardInterrupt: no ``except Exception`` may swallow it)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


@contextlib.contextmanager
def _signals_raise():
    """While the run lasts, SIGINT and SIGTERM raise :class:`Interrupted` (the first one: a
    second signal must not cut the removal of the temporary files short).  A signal the
    process was started to ignore (a background job's SIGINT) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; KeyboardInterrupt still applies
        return
    raised = []

    def handler(signum, frame):
        if not raised:
            raised.append(signum)
            raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def _interrupted(signum, args) -> str:
    """The line an interrupted run prints: whether its outputs are in place (all) or not (none)."""
    name = signal.Signals(signum).name
    outputs = getattr(args, "outputs", None)
    if outputs is not None and outputs.committed:  # the signal came during the last renames
        return f"interrupted by {name} after all its outputs were written"
    return f"interrupted by {name}; no output was written"


class _LogRecords(logging.Handler):
    """Collects WARNING and worse log records as one-line messages, printing nothing."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        try:
            self.messages.append(f"{record.name}: {_one_line(record.getMessage())}")
        except Exception:  # noqa: BLE001 - a malformed record must not break the run
            self.messages.append(record.name)


def _print_warnings(messages) -> None:
    """Each distinct message (e.g. a rank-deficient fit) as one ``kernelfit: warning:`` line."""
    for text in dict.fromkeys(messages):
        print(f"kernelfit: warning: {text}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors reported like every other error: one line, status 2."""

    def error(self, message):
        self.exit(2, f"kernelfit: error: {_one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kernelfit`` command."""
    parser = _Parser(
        prog="kernelfit",
        description="Estimate the convolution kernel that maps one image to another.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from importlib.metadata import PackageNotFoundError, version
    try:
        release = version("kernelfit")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        from . import __version__ as release
    parser.add_argument("--version", action="version", version=f"kernelfit {release}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    _add_estimate(commands)
    _add_apply(commands)
    demo = commands.add_parser("demo", help="run the worked examples on bundled/generated data")
    demo.set_defaults(handler=_run_demo)
    for command in commands.choices.values():
        command.add_argument(
            "--threads", type=_thread_count, metavar="N",
            help="use at most N threads (FFT workers and BLAS; default: the cores available). "
                 "Use 1 when several runs share the machine")
    return parser


def _thread_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--threads {text!r}: expected an integer >= 1")
    return int(text)


# --------------------------------------------------------------------------------------------
# Option definitions
# --------------------------------------------------------------------------------------------


def _add_estimate(commands) -> None:
    p = commands.add_parser(
        "estimate",
        help="estimate the kernel k with B = A (*) k",
        description="Estimate the kernel k such that B = A convolved with k "
        "(scipy.signal.convolve2d orientation), and write it to -o.",
    )
    p.add_argument("a", metavar="A", help="the original (sharp) image")
    p.add_argument("b", metavar="B", help="the observed (blurred) image")
    p.add_argument("--shape",
                   help="kernel size: N, HxW or H,W (e.g. 5, 5x5, 4x6, 4,6); omitted: chosen "
                   "from the images (the summary and --json report it)")
    # Boundary names are checked by the library, which also accepts scipy's and numpy's
    # aliases (symm, edge, constant, circular, ...); argparse choices would refuse those.
    p.add_argument("--boundary", default="valid",
                   help="how B was made at the edges: valid (no assumption, default), fill, "
                   "wrap, reflect, nearest, mirror, or auto (detected from B's border)")
    _add_center(p)
    p.add_argument("--model", default="free",
                   help="free (default), radial, powerlaw, separable, lowrank, gaussian, "
                   "elliptical, moffat, disk, motion or box")
    p.add_argument("--loss", default="l2",
                   help="l2 (default); l1 (least absolute deviations) or huber: robust to "
                   "outliers, for free and parametric kernels")
    p.add_argument("--f-scale", type=float, metavar="S",
                   help="Huber threshold in units of B (with --loss huber)")
    p.add_argument("--clip", type=float, metavar="C",
                   help="free kernel, l2: iterative sigma-clipping at C robust sigmas (e.g. 3)")
    p.add_argument("--truncate", type=float, metavar="T",
                   help="gaussian: cut the support at T*sigma, like scipy's gaussian_filter")
    p.add_argument("--rank", type=int, metavar="R", help="lowrank: the rank")
    p.add_argument("--reg", metavar="NAME",
                   help="regulariser: ridge, gradient or laplacian (adds LAM·‖Lk‖²), tv or l1")
    p.add_argument("--lam", metavar="LAM",
                   help="regularisation weight per pixel, or 'auto' (GCV; default)")
    p.add_argument("--ridge", metavar="LAM", help="shorthand for --reg ridge --lam LAM")
    p.add_argument("--method", metavar="NAME",
                   help="free kernels: normal (Gram matrix; default up to 51x51), iterative "
                   "(matrix-free, any size), lp (exact L1 linear program, --loss l1); the "
                   "classic answers fourier, wiener, richardson-lucy (for comparison); "
                   "default: chosen by size and regulariser")
    p.add_argument("--nonneg", action="store_true", help="constrain the kernel to be >= 0")
    p.add_argument("--normalize", metavar="SUM", type=float,
                   help="constrain the kernel to sum to SUM (e.g. 1)")
    p.add_argument("--noise-std", metavar="SIGMA", type=float,
                   help="known noise level of B; with --lam auto: the discrepancy principle")
    p.add_argument("--mask", metavar="M", help="mask image like B: nonzero pixels are used")
    p.add_argument("--saturation", metavar="LEVEL",
                   help="B pixels at or above LEVEL are clipped and not used; 'auto' detects "
                   "a clipped ceiling")
    p.add_argument("--saturation-a", metavar="LEVEL",
                   help="the same for A (drops every B pixel whose footprint touches one)")
    p.add_argument("--variation", metavar="D", type=int,
                   help="let the kernel vary over the image as a polynomial of degree D in "
                   "x, y; -o gets the kernel at the centre, --json all coefficients")
    p.add_argument("--background", metavar="D", type=int,
                   help="fit a polynomial background of degree D (0: an offset) with the kernel")
    _add_plane_options(p)
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--per-channel", action="store_true",
                        help="colour images: one kernel per channel, written as a (kh, kw, C) "
                        "stack (.npy, .tif or .fits)")
    colour.add_argument("--shared", action="store_true",
                        help="colour images: one kernel fitted to all channels together")
    _add_reading(p)
    p.add_argument("--tile", type=int, metavar="N",
                   help="read A, B (and --mask) lazily from .tif/.tiff, .npy or .zarr files "
                   "in tiles of NxN pixels: memory bounded by N and the kernel size")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="compute on the Dask cluster at ADDRESS (e.g. tcp://host:8786; needs "
                   "kernelfit[dask]); with --tile the workers read the files themselves")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="with --scheduler: give up (exit status 2) when the cluster has not "
                   "finished after SECONDS, e.g. because every worker died")
    p.add_argument("-o", "--output", required=True, metavar="KERNEL",
                   help="kernel file: .npy, .csv, .txt, .tif, .fits, or .png (a picture)")
    p.add_argument("--orientation", default="convolution",
                   choices=("convolution", "correlation"),
                   help="orientation of the written kernel (and --as-matrix): 'convolution' "
                        "as scipy applies it (default), 'correlation' as image editors, "
                        "Pillow, OpenCV filter2D and torch conv2d apply it (rotated by 180°)")
    p.add_argument("--as-matrix", action="store_true",
                   help="also print the kernel as an editor's convolution matrix: integers, "
                        "divisor and offset, and how well they reproduce B")
    p.add_argument("--strict", action="store_true",
                   help="exit 4 (failed) for a doubtful fit too, instead of 3")
    p.add_argument("--json", metavar="FIT.json", help="also write the whole fit as JSON")
    p.add_argument("--report", metavar="REPORT.html",
                   help="also write a self-contained HTML report (kernel, MTF, images, "
                   "residuals, λ curve, errors; needs matplotlib)")
    _add_verbosity(p)
    p.set_defaults(handler=_run_estimate)


def _add_apply(commands) -> None:
    p = commands.add_parser(
        "apply",
        help="convolve an image with a kernel",
        description="Convolve image A with KERNEL and write the result to -o.  If A is an "
        "8- or 16-bit image, a .png/.tif result is rounded and clipped to the same type.",
    )
    p.add_argument("a", metavar="A", help="the image")
    p.add_argument("kernel", metavar="KERNEL", help="kernel file: .npy, .csv, .txt, .tif, .fits")
    p.add_argument("--boundary", default="fill",
                   help="how A is extended beyond its edges (default fill = zeros)")
    _add_center(p)
    p.add_argument("--mode", default="same", choices=("same", "valid", "full"),
                   help="output size: like A (default), A - kernel + 1, or A + kernel - 1")
    _add_plane_options(p)
    _add_reading(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image: .png, .jpg, .bmp, .tif, .npy, .fits")
    _add_verbosity(p)
    p.set_defaults(handler=_run_apply)


def _add_center(p) -> None:
    p.add_argument("--center", metavar="Y,X",
                   help="kernel index that lands on the output pixel; default "
                   "((kh-1)//2, (kw-1)//2) as in scipy.signal")


def _add_plane_options(p) -> None:
    plane = p.add_mutually_exclusive_group()
    plane.add_argument("--channel", type=int, metavar="N",
                       help="use channel N (0 = red) of colour images")
    plane.add_argument("--gray", action="store_true",
                       help="convert colour images to Rec. 709 luma")


def _add_reading(p) -> None:
    p.add_argument("--page", type=int, metavar="K",
                   help="use page K (from 0) of multi-page TIFF images (frame K of a GIF)")
    p.add_argument("--hdu", type=int, metavar="N",
                   help="FITS images: read HDU N (from 0); default the first image HDU "
                   "with data")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help=f"refuse images of more than N pixels, from their header before "
                   f"decoding (default {io.MAX_PIXELS} = 16384x16384)")


def _add_verbosity(p) -> None:
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true", help="always print progress")
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="print nothing but warnings and errors")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _run_estimate(args) -> int:
    import kernelfit as kf

    started = time.perf_counter()
    progress = Progress(verbose=args.verbose, quiet=args.quiet)
    shape = None if args.shape is None else parse_shape(args.shape)  # None: chosen by the fit
    options = _fit_options(args)
    # Check outputs first: a typo in -o should not cost a long fit.
    io.check_output_path(args.output, "kernel")
    if args.json:
        io.check_output_path(args.json, "json")
    if args.report:
        from .report.html import check_report_path, require_matplotlib

        check_report_path(args.report)
        require_matplotlib()
    io.check_not_inputs({"-o": args.output, "--json": args.json, "--report": args.report},
                        {"A": args.a, "B": args.b, "--mask": args.mask})
    _check_reading(args)
    if args.timeout is not None and not args.scheduler:
        raise ValueError(f"--timeout {args.timeout:g} needs --scheduler (it bounds the wait for "
                         "a Dask cluster; a fit on this machine has no timeout)")
    streamed = args.tile is not None or args.scheduler
    if streamed and (shape is None or args.boundary.lower() == "auto"):
        raise ValueError("--tile and --scheduler need --shape and a named --boundary: the "
                         "automatic choices look at whole images")
    if streamed:
        return _run_estimate_tiled(args, shape, options, progress, started)

    read = _read_channels if _by_channel(args, options) else _read
    a = read(args.a, args, progress)
    progress.decide(a.size)
    b = read(args.b, args, progress)
    if args.mask:
        progress.say(f"reading {args.mask}")
        options["mask"] = io.read_mask(args.mask, **_reading(args))

    size = "an automatically sized" if shape is None else _describe(shape)
    progress.say(f"fitting {size} kernel on {_describe(b.shape)} pixels ...")
    with progress.bars():
        fit = kf.estimate(a, b, shape, **options)  # its warnings are printed by main()

    if not args.quiet:
        print(fit.summary())
    if args.as_matrix:
        print(_integer_matrix_text(fit, a, args.orientation))
    _write_outputs(args, fit, progress, a=a, b=b)
    progress.say(f"done in {time.perf_counter() - started:.1f} s")
    return _verdict_status(fit, args)


def _run_estimate_tiled(args, shape, options, progress, started) -> int:
    """--tile / --scheduler: statistics tile by tile, here or on a Dask cluster."""
    if getattr(args, "per_channel", False) or getattr(args, "shared", False) \
            or args.channel is not None or args.gray:
        raise ValueError("--tile and --scheduler fit single-channel images; --channel, --gray, "
                         "--per-channel and --shared are not available with them")
    if args.report:
        raise ValueError("--report draws the images and the residual, which --tile and "
                         "--scheduler never hold whole; use --json")
    if args.tile is not None and args.tile < 1:
        raise ValueError(f"--tile {args.tile} must be a positive number of pixels")
    if args.tile is not None:
        from .io.lazy import open_lazy

        if args.hdu is not None:
            raise ValueError("--hdu picks an HDU of a FITS file; --tile reads .tif, .npy "
                             "and .zarr files, not FITS")
        lazy = dict(page=args.page, max_pixels=args.max_pixels)
        a, b = (open_lazy(path, **lazy) for path in (args.a, args.b))
        if args.mask:
            options["mask"] = open_lazy(args.mask, **lazy)
    else:
        a, b = (_read(path, args, progress) for path in (args.a, args.b))
        if args.mask:
            options["mask"] = io.read_mask(args.mask, **_reading(args))
    progress.decide(b.shape[0] * b.shape[1])
    where = f" on {args.scheduler}" if args.scheduler else ""
    progress.say(f"fitting {_describe(shape)} kernel on {_describe(b.shape)} pixels{where} ...")
    if args.scheduler:
        from .front.distributed import estimate

        fit = estimate(a, b, shape, scheduler=args.scheduler, tile=args.tile,
                       timeout=args.timeout, **options)
    else:
        from .front.tiled import estimate_tiled

        with progress.bars():
            fit = estimate_tiled(a, b, shape, tile=args.tile, **options)
    if not args.quiet:
        print(fit.summary())
    _write_outputs(args, fit, progress)
    progress.say(f"done in {time.perf_counter() - started:.1f} s")
    return _verdict_status(fit, args)


def _verdict_status(fit, args) -> int:
    """Exit status of a finished fit: 0 ok, 3 doubtful (4 with --strict), 4 failed; a fit
    that is not ok says why in one line on stderr (also under --quiet)."""
    verdict = fit.verdict
    if verdict.level != "ok":
        print(f"kernelfit: fit {_one_line(verdict)}", file=sys.stderr)
    if args.strict and verdict.level == "doubtful":
        return 4
    return verdict.exit_code


def _run_apply(args) -> int:
    import kernelfit as kf

    started = time.perf_counter()
    progress = Progress(verbose=args.verbose, quiet=args.quiet)
    center = parse_pair(args.center, "--center") if args.center else None
    io.check_output_path(args.output, "image")
    io.check_not_inputs({"-o": args.output}, {"A": args.a, "KERNEL": args.kernel})
    _check_reading(args)

    progress.say(f"reading {args.a}")
    stored = io.read_array(args.a, **_reading(args))
    progress.say(f"reading {args.kernel}")
    kernel = io.read_kernel(args.kernel, stack=True, max_pixels=args.max_pixels)
    options = dict(boundary=args.boundary, center=center, mode=args.mode)
    if kernel.ndim == 3:
        out = _apply_per_channel(stored, kernel, args, progress, options)
    else:
        a = io.select_plane(stored, channel=args.channel, gray=args.gray, source=args.a)
        progress.decide(a.size)
        progress.say(f"convolving {_describe(a.shape)} pixels with a "
                     f"{_describe(kernel.shape)} kernel ...")
        out = kf.convolve(a, kernel, **options)

    # An 8/16-bit input gives an 8/16-bit output, so that apply reproduces such images.
    like = stored.dtype if np.issubdtype(stored.dtype, np.integer) else None
    _write_all(args, progress, [
        (args.output, lambda path: io.write_image(path, out, like_dtype=like)),
    ])
    progress.say(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _apply_per_channel(stored, kernels, args, progress, options) -> np.ndarray:
    """A (kh, kw, C) stack of kernels (``--per-channel``) on a colour image: channel by
    channel, the channels last."""
    import kernelfit as kf

    if args.channel is not None or args.gray:
        raise ValueError(f"{args.kernel} holds one kernel per channel "
                         f"({kernels.shape[-1]}); --channel and --gray pick one plane")
    if stored.ndim != 3 or stored.shape[-1] != kernels.shape[-1]:
        raise ValueError(f"{args.kernel} holds {kernels.shape[-1]} kernels (one per channel) "
                         f"but {args.a} has shape {stored.shape}; they need the same number "
                         "of channels, last")
    progress.decide(stored.size)
    progress.say(f"convolving {_describe(stored.shape[:2])} pixels with "
                 f"{kernels.shape[-1]} kernels of {_describe(kernels.shape[:2])} ...")
    return np.stack([kf.convolve(stored[..., c], kernels[..., c], **options)
                     for c in range(kernels.shape[-1])], axis=-1)


def _run_demo(args) -> int:
    from .demo import run_demo

    run_demo()
    return 0


def _by_channel(args, options) -> bool:
    """--per-channel / --shared: check them against the other options, set the fit's."""
    if not (args.per_channel or args.shared):
        return False
    flag = "--per-channel" if args.per_channel else "--shared"
    if args.channel is not None or args.gray:
        raise ValueError(f"{flag} fits every channel; it cannot be combined with "
                         "--channel or --gray")
    suffix = os.path.splitext(args.output)[1].lower()
    if args.per_channel and suffix not in (".npy", ".tif", ".tiff", ".fits", ".fit", ".fts"):
        # Checked before the fit: the stack of kernels needs an array format.
        raise ValueError(f"{args.output}: --per-channel writes a (kh, kw, C) stack of "
                         "kernels; use .npy, .tif or .fits")
    options.update(channel_axis=-1, shared_channels=bool(args.shared))
    return True


def _read_channels(path, args, progress) -> np.ndarray:
    """An image with its channels on the last axis (a grey image stays 2-D)."""
    progress.say(f"reading {path}")
    image = io.read_array(path, **_reading(args))
    if image.ndim not in (2, 3):
        raise ValueError(f"{path}: expected an image with channels on the last axis, got "
                         f"shape {image.shape}")
    return image


def _read(path, args, progress) -> np.ndarray:
    progress.say(f"reading {path}")
    return io.read_image(path, channel=args.channel, gray=args.gray, **_reading(args))


def _reading(args) -> dict:
    """The reader options every image of the run is read with."""
    return dict(page=args.page, hdu=args.hdu, max_pixels=args.max_pixels)


def _check_reading(args) -> None:
    if args.max_pixels is not None and args.max_pixels < 1:
        raise ValueError(f"--max-pixels {args.max_pixels} must be a positive number of pixels")
    if args.hdu is not None and args.hdu < 0:
        raise ValueError(f"--hdu {args.hdu} must be an HDU number, counted from 0")


def _fit_options(args) -> dict:
    """Keyword arguments for :func:`kernelfit.estimate`; unset options are left to its defaults."""
    options = {"boundary": args.boundary}
    if args.center:
        options["center"] = parse_pair(args.center, "--center")
    if args.ridge is not None and (args.reg or args.lam):
        raise ValueError("--ridge LAM is short for --reg ridge --lam LAM; give one or the other")
    if args.ridge is not None:
        options.update(reg="ridge", lam=parse_lam(args.ridge, "--ridge"))
    if args.reg:
        options["reg"] = args.reg
    if args.lam:
        options["lam"] = parse_lam(args.lam, "--lam")
    if args.nonneg:
        options["nonneg"] = True
    if args.model != "free":
        options["model"] = args.model
    if args.loss != "l2":
        options["loss"] = args.loss
    for name in ("normalize", "noise_std", "f_scale", "clip", "truncate", "rank", "method",
                 "background", "variation"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    for name in ("saturation", "saturation_a"):
        text = getattr(args, name)
        if text is not None:
            options[name] = parse_level(text, "--" + name.replace("_", "-"))
    return options


def _write_outputs(args, fit, progress, *, a=None, b=None) -> None:
    """The kernel, the JSON and the report: all of them, or none."""
    kernel = _oriented(fit, getattr(args, "orientation", "convolution"))
    writes = [(args.output, lambda path: io.write_kernel(path, kernel))]
    if args.json:
        writes.append((args.json, lambda path: io.write_json(path, fit.to_dict())))
    if getattr(args, "report", None):
        def draw(path):
            progress.say(f"drawing the report {args.report} ...")
            fit.report(path, a=a, b=b)

        writes.append((args.report, draw))
    _write_all(args, progress, writes)


def _oriented(fit, orientation) -> np.ndarray:
    """The fitted kernel (or stack of per-channel kernels) in the chosen orientation: the
    correlation one is rotated by 180° in its two image axes."""
    kernel = np.asarray(fit.kernel)
    if orientation == "convolution":
        return kernel
    channel_axis = getattr(fit, "channel_axis", None)
    axes = [axis for axis in range(kernel.ndim)
            if channel_axis is None or axis != channel_axis % kernel.ndim]
    return np.flip(kernel, axis=tuple(axes)).copy()


def _integer_matrix_text(fit, a, orientation) -> str:
    """``--as-matrix``: the integer matrix, and the RMS of ``b`` minus its prediction next to
    the fit's own."""
    if not hasattr(fit, "as_integer_matrix") or np.ndim(fit.kernel) != 2:
        raise ValueError("--as-matrix needs one kernel (not one per channel): choose a "
                         "channel with --channel or --gray")
    import kernelfit as kf

    matrix = fit.as_integer_matrix(orientation=orientation)
    as_convolution = matrix.kernel if orientation == "convolution" else matrix.kernel[::-1, ::-1]
    residual = np.asarray(fit.residual)
    mode = "same" if residual.shape == a.shape else \
        "valid" if residual.shape[0] < a.shape[0] else "full"
    # b − a⊛M − offset = (b − a⊛k − background) + a⊛(k − M) + (background − offset)
    background = float(np.ravel(fit.background)[0]) \
        if fit.background is not None and np.size(fit.background) == 1 else 0.0
    with_integers = residual + background - matrix.offset + kf.convolve(
        a, fit.kernel - as_convolution, boundary=fit.boundary, center=fit.center, mode=mode)
    return (f"integer matrix ({orientation} orientation):\n{matrix}\n"
            f"it reproduces B with residual RMS {_rms(with_integers):.4g} (the fitted "
            f"kernel: {_rms(residual):.4g}); largest coefficient change "
            f"{matrix.max_error:.3g}")


def _rms(values) -> float:
    return float(np.sqrt(np.nanmean(np.square(values))))


def _write_all(args, progress, writes) -> None:
    """Run each ``(path, writer)`` on a temporary file beside ``path``; rename them all at the
    end, or remove them all if one fails or the run is interrupted.  ``args.outputs`` keeps
    the set, so that :func:`main` can tell an interrupt after the renames from one before."""
    with io.atomic_outputs() as outputs:
        args.outputs = outputs
        for path, writer in writes:
            outputs.write(path, writer)
    for path, _ in writes:
        progress.say(f"wrote {path}")


# --------------------------------------------------------------------------------------------
# Parsing option values (here rather than as argparse types, so that a bad value is reported
# as one "kernelfit: error:" line like every other input error)
# --------------------------------------------------------------------------------------------

_SHAPE = re.compile(r"^\s*(\d+)\s*(?:[x×,]\s*(\d+)\s*)?$", re.IGNORECASE)
_PAIR = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")


def parse_shape(text: str):
    """Parse ``--shape``: ``"5"``, ``"5x5"``, ``"4x6"`` or ``"4,6"``.

    Examples
    --------
    >>> parse_shape("4x6"), parse_shape("5"), parse_shape("4,6")
    ((4, 6), (5, 5), (4, 6))
    """
    match = _SHAPE.match(text)
    if not match:
        raise ValueError(
            f"--shape {text!r} is not a kernel size; use N, HxW or H,W with positive "
            "integers, e.g. 5, 5x5 or 4x6"
        )
    kh = int(match.group(1))
    kw = int(match.group(2)) if match.group(2) else kh
    if kh < 1 or kw < 1:
        raise ValueError(f"--shape {text!r}: kernel sizes must be at least 1")
    return kh, kw


def parse_pair(text: str, option: str) -> tuple[int, int]:
    """Parse a ``Y,X`` pair of non-negative integers such as ``--center 2,2``.

    Examples
    --------
    >>> parse_pair("1,2", "--center")
    (1, 2)
    """
    match = _PAIR.match(text)
    if not match:
        raise ValueError(f"{option} {text!r} must be two non-negative integers Y,X, e.g. 2,2")
    return int(match.group(1)), int(match.group(2))


def parse_level(text: str, option: str):
    """A saturation level: a number, or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected a number or 'auto'") from None


def parse_lam(text: str, option: str = "--lam"):
    """Parse a regularisation weight: a finite number >= 0, or ``auto`` (not for --ridge).

    Examples
    --------
    >>> parse_lam("1e-3"), parse_lam("auto")
    (0.001, 'auto')
    """
    if option == "--lam" and text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option} {text!r} must be a number") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{option} {text!r} must be a finite number >= 0")
    return value


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class Progress:
    """Stage lines on stderr: always with --verbose, never with --quiet, else for big images.

    Until the image size is known (:meth:`decide`), lines are held back, then printed or
    dropped, so that a small run stays silent and a large one reports from its first stage.
    """

    def __init__(self, *, verbose=False, quiet=False):
        self._enabled = False if quiet else (True if verbose else None)
        self._held: list[str] = []

    def say(self, message: str) -> None:
        if self._enabled is None:
            self._held.append(message)
        elif self._enabled:
            print(f"kernelfit: {message}", file=sys.stderr, flush=True)

    def bars(self):
        """Progress bars with an ETA on stderr for the long loops of the fit (tiles,
        iterations) when stage lines are shown (:mod:`kernelfit.core.progress`)."""
        from .core.progress import progress_to

        return progress_to(sys.stderr) if self._enabled else contextlib.nullcontext()

    def decide(self, n_pixels: int) -> None:
        if self._enabled is None:
            self._enabled = n_pixels > LARGE_IMAGE_PIXELS
            held, self._held = self._held, []
            for message in held:
                self.say(message)


def _describe(shape) -> str:
    return "x".join(str(n) for n in shape)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
