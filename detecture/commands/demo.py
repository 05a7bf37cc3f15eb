"""``detecture demo``: a local web page to try the segmenters (needs the optional extra: pip install -e .[demo])."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import ipaddress
import logging
import socket
from pathlib import Path

from ..errors import InputError
from .help_format import DefaultsHelpFormatter
from .model_options import add_quantization, add_qwen, add_sam3
from .unserved import given_options, refuse_with_tiny

logger = logging.getLogger(__name__)

LOADING_OPTIONS = ("qwen", "sam3", "device", "dtype", "quantization")  # how --vlm / --head load the models

EPILOG = """\
examples:
  detecture demo                                   (classical only, http://127.0.0.1:7860)
  detecture demo --vlm --head checkpoints/my-head  (also Qwen3-VL + SAM3, with bridge grounding)
  detecture demo --host 0.0.0.0 --port 8080        (serve the local network)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="web demo in the browser (Gradio; pip install -e .[demo])",
        description="Serve a local web page: upload an image, choose classical or detecture, see the regions with "
                    "their descriptions, a table and downloads. Binds 127.0.0.1 unless --host says otherwise.",
        epilog=EPILOG, formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="host name or IPv4 address to bind (0.0.0.0 serves the local network)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--vlm", action="store_true", help="load Qwen3-VL + SAM3 at start for the detecture methods")
    p.add_argument("--tiny", action="store_true",
                   help="tiny random backbones for the detecture methods (plumbing; the options that name or load the "
                        "real models are refused with it)")
    p.add_argument("--head", type=Path, help="trained head folder: adds bridge grounding")
    add_qwen(p)
    add_sam3(p)
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda if available)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on GPU, fp32 on CPU")
    add_quantization(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise InputError("the demo needs Gradio: pip install -e '.[demo]' (or pip install gradio)")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1..65535, got {args.port}")
    refuse_idle_model_options(args)
    require_free_port(args.host, args.port)
    if args.head is not None:  # a mistyped --head is the user's error, not a reason to serve classical only
        from ..service import SegmentRequest, check_before_loading

        check_before_loading(SegmentRequest("detecture", head=args.head, qwen=args.qwen, tiny=args.tiny))
    return _serve(args)  # SIGTERM unwinds like Ctrl+C (cli.sigterm_as_interrupt), removing the temporary folders


def refuse_idle_model_options(args: argparse.Namespace) -> None:
    """Refuse the model-loading options when they would load nothing: --tiny builds its own backbones, as segment's
    does (the service's :data:`~detecture.service.TINY_IGNORES`), and without --vlm or --head the demo serves
    classical only; either way the user would think their --qwen or --device was in use."""
    if args.tiny:
        from ..service import TINY_IGNORES

        refuse_with_tiny(given_options(args, TINY_IGNORES))
    given = given_options(args, LOADING_OPTIONS)
    if given and not (args.vlm or args.head is not None):
        raise InputError(f"{', '.join(given)}: model options apply only when the models load; add --vlm (or --head)")


def _serve(args: argparse.Namespace) -> int:
    from ..demo.app import launch
    from ..demo.engine import DemoEngine

    if args.tiny:
        engine = DemoEngine.create(tiny=True, **({"head": args.head} if args.head else {}))
    elif args.vlm or args.head:
        engine = DemoEngine.create(load_models=True, qwen=args.qwen, sam3=args.sam3, head=args.head,
                                   device=args.device, dtype=args.dtype, quantization=args.quantization)
    else:
        engine = DemoEngine.create()
    logger.info("starting the demo on %s:%d", args.host, args.port)
    if getattr(args, "verbose", 0) < 2:  # one line per HTTP request (the warm-up's too) is debug detail
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        launch(engine, host=args.host, port=args.port, share=args.share)
    finally:
        engine.close()
    return 0


def require_free_port(host: str, port: int) -> None:
    """Refuse an address the server cannot bind before any model loads (Gradio's own error is a traceback that
    advises a ``launch()`` argument the command line does not have), saying which option is at fault: --host when
    the address is not this machine's, --port when another program holds it (or it needs privileges)."""
    refuse_ipv6_literal(host)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InputError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"--port {port}: cannot serve on {host}:{port} ({exc.strerror}); another program "
                                 "(another demo?) uses it: choose another --port") from None
            raise InputError(f"--port {port}: cannot serve on {host}:{port} ({exc.strerror})") from None


def refuse_ipv6_literal(host: str) -> None:
    """Refuse an IPv6 address (``::1``, ``::``, bracketed or not): Gradio writes the host into its own URL without
    brackets (``http://::1:7860/``), so the server would start and then fail with a traceback. A host name that
    resolves to IPv6 (``localhost``) makes a valid URL and is accepted."""
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return
    if address.version == 6:
        raise InputError(f"--host {host}: the demo cannot serve on an IPv6 address; use a host name (localhost) or an "
                         "IPv4 address (127.0.0.1, or 0.0.0.0 for the local network)")
