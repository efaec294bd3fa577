"""`python -m tinymix [command]`: the command line. Each command is a small function below."""
import argparse
import sys


def demo(args):
    """The smallest honest end-to-end run of the engine: a two-layer MLP learns y = sin(3x) by
    gradient descent, using nothing but tinymix Tensors and autograd."""
    from . import Tensor, backend, manual_seed
    from .backend import xp

    manual_seed(args.seed)
    x = Tensor(backend.host_uniform((256, 1), -1.0, 1.0))
    y = Tensor(xp.sin(3.0 * x.data))
    w1 = Tensor(backend.host_normal((1, 32), 1.0), requires_grad=True)
    b1 = Tensor(xp.zeros(32, dtype=xp.float32), requires_grad=True)
    w2 = Tensor(backend.host_normal((32, 1), 0.2), requires_grad=True)
    b2 = Tensor(xp.zeros(1, dtype=xp.float32), requires_grad=True)
    params = [w1, b1, w2, b2]
    losses = []
    for step in range(args.steps):
        prediction = (x @ w1 + b1).tanh() @ w2 + b2          # (256, 1)
        loss = ((prediction - y) ** 2).mean()
        for p in params:
            p.zero_grad()
        loss.backward()
        for p in params:
            p.data -= args.lr * p.grad
        losses.append(loss.item())
        if step % max(args.steps // 10, 1) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  mse {losses[-1]:.5f}")
    print(f"mean squared error fell from {losses[0]:.4f} to {losses[-1]:.4f} on backend {backend.name}")
    if not losses[-1] < 0.1 * losses[0]:
        raise SystemExit("the demo did not learn: something is wrong with the engine")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tinymix", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    p = commands.add_parser("demo", help="fit a tiny MLP with the autograd engine")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # the built-in default
        args = parser.parse_args(["demo"] + list(argv or sys.argv[1:]))
    args.run(args)
