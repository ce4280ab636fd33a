#!/usr/bin/python3
"""The PyTorch twin of a milscreen network.

Builds the same network as milscreen from a milscreen INI config (same layers, ceil-mode
pooling, the same log-space MIL pooling formulas and loss), loads milscreen's flat parameter
order or a checkpoint, and reproduces milscreen's dropout masks bit for bit. Users take a
trained model into their own Python with it; the tests use it as the independent reference.

A trained network from its checkpoint alone (the config text, the normalisation and the class
names are inside it), predicting as `milscreen score` does:

    import milscreen_torch as mt
    p = mt.from_checkpoint("runs/my/ckpt-00012000.h5")    # applies /norm/mean, /norm/std
    out = p.predict(images)             # images: (N, C, H, W) or (C, H, W) raw pixel values
    out["mil_prob"], out["fc_prob"], out["maps"], out["pred"]   # numpy; p.class_names
    p.export_torchscript("model.pt")    # torch.jit.load("model.pt")(x) -> same three outputs
    p.export_onnx("model.onnx")         # input "images", outputs mil_prob, fc_prob, maps

The network itself, from a config:

    model = mt.build_model("configs/paper.ini")
    z, P, y = model(x)                  # x: (N, C, H, W) float, normalised
    loss = model.loss(t)                # t: (N, K) targets, after a forward

From the shell: milscreen_torch.py export CHECKPOINT [--torchscript FILE] [--onnx FILE].
"""
import argparse
import configparser
import math
import os
import sys
import tempfile

import numpy as np
try:
    import torch
except ImportError:
    sys.exit("milscreen_torch: PyTorch is not installed for this Python (Debian's "
             "python3-torch; tools/setup-deps --test installs it)")
import torch.nn as nn
import torch.nn.functional as F

RESERVED = {"net", "train", "data", "score", "eval", "loader", "bench", "localise", "render"}


def read_config(path, sets=()):
    """Reads an INI file as milscreen does (';' and '#' comments), applying section.key=value
    overrides. Returns (net options dict, list of (name, options dict) layers in order)."""
    with open(path) as f:
        return parse_config(f.read(), sets, source=path)


def parse_config(text, sets=(), source="<config>"):
    """read_config on the text of a config (e.g. a checkpoint's `config` attribute)."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    cp.optionxform = str
    cp.read_string(text, source=source)
    for s in sets:
        key, value = s.split("=", 1)
        sec, k = key.split(".", 1)
        if not cp.has_section(sec):
            cp.add_section(sec)
        cp.set(sec, k, value)
    net = dict(cp["net"]) if cp.has_section("net") else {}
    layers = [(s, dict(cp[s])) for s in cp.sections() if s not in RESERVED]
    return net, layers


# ---- milscreen's counter-based RNG (engine/rng.h), for identical dropout masks ----------
_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(z):
    with np.errstate(over="ignore"):
        z = np.asarray(z, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def dropout_key(seed, step, layer):
    with np.errstate(over="ignore"):
        a = _mix64(np.uint64(seed) ^ np.uint64(0x6D696C7363726E))
        return _mix64(a + np.uint64(step) * np.uint64(0x100000001B3) + np.uint64(layer))


def dropout_mask(shape, seed, step, layer, rate):
    """Keep-mask (float32, scaled by 1/(1-rate)) over the logical NCHW index, as milscreen."""
    n = int(np.prod(shape))
    key = dropout_key(seed, step, layer)
    u = (_mix64(key ^ _mix64(np.arange(n, dtype=np.uint64))) >> np.uint64(40)).astype(
        np.float32) * np.float32(1.0 / 16777216.0)
    keep = u >= np.float32(rate)
    scale = np.float32(1.0) / (np.float32(1.0) - np.float32(rate))
    return torch.from_numpy((keep.astype(np.float32) * scale).reshape(shape))


# ---- MIL pooling in log space (engine/ref/ops.inc is the specification) -----------------
def mil_pool(z, kind, a=10.0, r=1.0, b=None):
    """z: (N, K, h, w) logits. Returns P, log P, log(1-P), each (N, K)."""
    z = z.flatten(2)
    tiny = torch.finfo(z.dtype).tiny
    ls = F.logsigmoid
    if kind == "noisy_and":
        pbar = torch.sigmoid(z).mean(2)
        qbar = torch.sigmoid(-z).mean(2)
        u = a * (pbar - b)
        lden = math.log(-math.expm1(-a))
        lp = ls(u) + torch.log((-torch.expm1(-a * pbar)).clamp_min(tiny)) - ls(a * (1 - b)) - lden
        l1 = ls(-u) + torch.log((-torch.expm1(-a * qbar)).clamp_min(tiny)) - ls(a * b) - lden
    elif kind == "lse":
        P = torch.log1p(torch.expm1(r * torch.sigmoid(z)).mean(2)) / r
        Q = -torch.log1p(torch.expm1(-r * torch.sigmoid(-z)).mean(2)) / r
        lp, l1 = torch.log(P.clamp_min(tiny)), torch.log(Q.clamp_min(tiny))
    elif kind == "gm":
        # log of the mean of exp(r log p) with its maximum taken out: the mean (not a sum
        # divided by the instance count J) keeps a traced or exported network valid for
        # inputs of any size
        u = r * ls(z)
        m = u.amax(2, keepdim=True)
        lp = (torch.log(torch.exp(u - m).mean(2)) + m.squeeze(2)) / r
        l1 = torch.log((-torch.expm1(lp)).clamp_min(tiny))
    elif kind == "max":
        zm = z.max(2).values
        lp, l1 = ls(zm), ls(-zm)
    elif kind == "noisy_or":
        l1 = ls(-z).sum(2)
        lp = torch.log((-torch.expm1(l1)).clamp_min(tiny))
    elif kind == "isr":
        L = torch.logsumexp(z, 2)
        lp, l1 = ls(L), ls(-L)
    else:
        raise ValueError(f"unknown MIL pooling {kind}")
    return torch.exp(lp), lp, l1


class MilNet(nn.Module):
    """The milscreen network; parameters are named after the config sections."""

    def __init__(self, net, layers):
        super().__init__()
        self.channels = int(net.get("channels", 3))
        self.classes = int(net.get("classes", 12))
        rounding = net.get("rounding", "ceil")
        self.spec = []
        self.convs = nn.ModuleDict()
        c = self.channels
        self.mil = None
        self.head = None
        for name, o in layers:
            kind = o.get("type", "conv")
            if kind == "conv":
                f = o["filters"]
                f = self.classes if f == "classes" else int(f)
                k, s, p = int(o.get("size", 3)), int(o.get("stride", 1)), int(o.get("pad", 0))
                self.convs[name] = nn.Conv2d(c, f, k, s, p)
                if "bias_init" in o:
                    nn.init.constant_(self.convs[name].bias, float(o["bias_init"]))
                self.spec.append(("conv", name, o.get("activation", "relu") == "relu"))
                c = f
            elif kind in ("maxpool", "avgpool"):
                k, s, p = int(o.get("size", 3)), int(o.get("stride", 2)), int(o.get("pad", 0))
                ceil = o.get("rounding", rounding) == "ceil"
                self.spec.append((kind, name, (k, s, p, ceil)))
            elif kind == "relu":
                self.spec.append(("relu", name, None))
            elif kind == "dropout":
                self.spec.append(("dropout", name, float(o.get("rate", 0.5))))
            elif kind == "mil":
                self.mil = dict(kind=o.get("pool", "noisy_and"), a=float(o.get("a", 10)),
                                r=float(o.get("r", 1)), name=name)
                if self.mil["kind"] == "noisy_and":
                    self.register_parameter(
                        "mil_b", nn.Parameter(torch.full((c,), float(o.get("b_init", 0.5)))))
                self.spec.append(("mil", name, None))
            elif kind == "fc":
                self.fc = nn.Linear(c, c)
                if float(o.get("identity", 0)) > 0:
                    with torch.no_grad():
                        self.fc.weight.copy_(torch.eye(c) * float(o["identity"]))
                        self.fc.bias.zero_()
                self.head = o.get("head", "softmax")
                self.fc_name = name
                self.spec.append(("fc", name, None))
            else:
                raise ValueError(f"[{name}] unknown type {kind}")
        self.dropout_seed = None  # (seed, step) to reproduce milscreen's masks exactly
        self._last = None
        self._guided = False

    def forward(self, x):
        """Returns (z, P, y): class-map logits (N,K,h,w), MIL output (N,K), head logits."""
        for i, (kind, name, arg) in enumerate(self.spec):
            if self._guided and kind != "fc" and x.requires_grad:
                # guided backprop (paper eq. 4): the backward signal is clamped at 0 as it
                # leaves every layer
                x.register_hook(lambda g: g.clamp(min=0))
            if kind == "conv":
                x = self.convs[name](x)
                if arg:
                    x = F.relu(x)
            elif kind == "maxpool":
                k, s, p, ceil = arg
                x = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
            elif kind == "avgpool":
                k, s, p, ceil = arg
                x = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=False)
            elif kind == "relu":
                x = F.relu(x)
            elif kind == "dropout":
                if self.training and arg > 0:
                    if self.dropout_seed is not None:
                        seed, step = self.dropout_seed
                        x = x * dropout_mask(tuple(x.shape), seed, step, i, arg).to(x)
                    else:
                        x = F.dropout(x, arg, True)
            elif kind == "mil":
                z = x
                m = self.mil
                P, lp, l1 = mil_pool(z, m["kind"], m["a"], m["r"],
                                     getattr(self, "mil_b", None))
                x = P
            elif kind == "fc":
                x = self.fc(x)
        y = x if self.head else None
        self._last = (P, lp, l1, y)
        return z, P, y

    def guided(self, x, cls=-1):
        """The Jacobian map of paper §2.4: guided backpropagation from the MIL layer started
        at P_i * p_ij for class cls (every class when cls < 0). Returns d/dx, (N, C, H, W)."""
        x = x.detach().clone().requires_grad_(True)
        self._guided = True
        try:
            z, P, y = self(x)
        finally:
            self._guided = False
        seed = (P[:, :, None, None] * torch.sigmoid(z)).detach()
        if cls >= 0:
            keep = torch.zeros_like(seed)
            keep[:, cls] = 1
            seed = seed * keep
        z.backward(seed)
        return x.grad

    def loss(self, t):
        """Eq. 2 of the paper, mean over the batch, after a forward pass."""
        P, lp, l1, y = self._last
        L = -(t * lp + (1 - t) * l1).sum(1)
        if y is not None:
            if self.head == "softmax":
                L = L - (t * F.log_softmax(y, 1)).sum(1)
            else:
                L = L + F.binary_cross_entropy_with_logits(y, t, reduction="none").sum(1)
        return L.mean()

    def head_prob(self):
        P, lp, l1, y = self._last
        return F.softmax(y, 1) if self.head == "softmax" else torch.sigmoid(y)

    def flat_parameters(self):
        """Parameters in milscreen's flat order: per layer, weights then bias."""
        out = []
        for kind, name, _ in self.spec:
            if kind == "conv":
                out += [self.convs[name].weight, self.convs[name].bias]
            elif kind == "mil" and hasattr(self, "mil_b"):
                out.append(self.mil_b)
            elif kind == "fc":
                out += [self.fc.weight, self.fc.bias]
        return out

    def named_layer_parameters(self):
        """(dataset name in a milscreen checkpoint, tensor), e.g. ('conv1/weight', w)."""
        out = []
        for kind, name, _ in self.spec:
            if kind == "conv":
                out += [(f"{name}/weight", self.convs[name].weight),
                        (f"{name}/bias", self.convs[name].bias)]
            elif kind == "mil" and hasattr(self, "mil_b"):
                out.append((f"{name}/threshold", self.mil_b))
            elif kind == "fc":
                out += [(f"{name}/weight", self.fc.weight), (f"{name}/bias", self.fc.bias)]
        return out

    def load_flat(self, flat):
        flat = torch.as_tensor(np.asarray(flat))
        off = 0
        with torch.no_grad():
            for p in self.flat_parameters():
                n = p.numel()
                p.copy_(flat[off:off + n].view_as(p))
                off += n
        if off != flat.numel():
            raise ValueError(f"flat parameters: {flat.numel()} values for {off} parameters")


def build_model(config_path, sets=()):
    net, layers = read_config(config_path, sets)
    return MilNet(net, layers)


def load_checkpoint(model, path):
    """Loads the weights of a milscreen checkpoint (HDF5, one dataset per parameter in
    PyTorch's layout under the layer's name) into model."""
    import h5py
    with h5py.File(path, "r") as f:
        with torch.no_grad():
            for name, p in model.named_layer_parameters():
                if name not in f["weights"]:
                    raise KeyError(f"{path}: no weights/{name}")
                p.copy_(torch.from_numpy(f["weights"][name][()]).view_as(p))
    return model


# ---- a trained network from its checkpoint alone -----------------------------------------
def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _names(v):
    """A checkpoint's class_names / channel_names: one string, names separated by newlines."""
    t = _text(v) if v is not None else ""
    return [n for n in t.split("\n") if n]


class Predictor(nn.Module):
    """A trained milscreen network with its checkpoint's normalisation, computing what
    `milscreen score` writes: forward(x) takes raw pixel values x (N, C, H, W) float32 and
    returns (mil_prob (N, K), fc_prob (N, K), maps (N, K, h, w)), where fc_prob is the head's
    probabilities (softmax or sigmoid), or mil_prob for a network without a head, and maps
    are the instance probabilities p_ij. With normalise=False, x must already be normalised.

    Attributes: net (the MilNet), class_names, channel_names, config (the checkpoint's config
    text), digest (the checkpoint's), path."""

    def __init__(self, net, mean, std, normalise=True, class_names=(), channel_names=(),
                 config="", digest="", path=""):
        super().__init__()
        self.net = net.eval()
        C = net.channels
        mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        std = np.asarray(std, dtype=np.float32).reshape(-1)
        if mean.size != C or std.size != C:
            raise ValueError(f"{path or 'checkpoint'}: normalisation for {mean.size} channels, "
                             f"network has {C}")
        # as score: (x - mean) * (1 / std), a channel of std 0 is only centred
        inv = np.where(std > 0, np.float32(1) / np.where(std > 0, std, 1), np.float32(1))
        self.register_buffer("mean", torch.from_numpy(mean.copy()).view(1, C, 1, 1))
        self.register_buffer("inv_std", torch.from_numpy(inv.astype(np.float32)).view(1, C, 1, 1))
        self.normalise = bool(normalise)
        self.class_names = list(class_names)
        self.channel_names = list(channel_names)
        self.config, self.digest, self.path = config, digest, path

    @property
    def channels(self):
        return self.net.channels

    @property
    def classes(self):
        return self.net.classes

    def forward(self, x):
        if self.normalise:
            x = (x - self.mean) * self.inv_std
        z, P, y = self.net(x)
        fc = self.net.head_prob() if y is not None else P
        return P, fc, torch.sigmoid(z)

    def predict(self, images, batch=8):
        """images: numpy (N, C, H, W) or (C, H, W), any numeric dtype (a shard's uint16 as
        it is). Returns a dict of numpy arrays: mil_prob (N, K), fc_prob (N, K), maps
        (N, K, h, w) float32 and pred (N,) int32, the arg-max of fc_prob (as score's /pred).
        A single (C, H, W) image gives N = 1."""
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"predict: images must be (N, C, H, W) or (C, H, W), not {x.shape}")
        if x.shape[1] != self.channels:
            raise ValueError(f"predict: images have {x.shape[1]} channels, the network "
                             f"{self.channels} ({', '.join(self.channel_names) or 'unnamed'})")
        outs = {"mil_prob": [], "fc_prob": [], "maps": []}
        self.eval()
        with torch.no_grad():
            for i in range(0, x.shape[0], max(1, int(batch))):
                xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))
                for k, v in zip(("mil_prob", "fc_prob", "maps"), self(xb)):
                    outs[k].append(v.numpy())
        out = {k: np.concatenate(v) for k, v in outs.items()}
        out["pred"] = out["fc_prob"].argmax(1).astype(np.int32)
        return out

    def _example(self, size):
        h, w = size
        return torch.zeros(1, self.channels, int(h), int(w))

    def export_torchscript(self, path, size=(128, 128)):
        """Saves a TorchScript module (torch.jit.trace on a (1, C, *size) input; every layer is
        size-generic, so it runs on inputs of any size of at least the network's smallest)
        computing forward(): raw pixels in (normalisation inside, unless normalise=False),
        (mil_prob, fc_prob, maps) out. Loads with torch.jit.load alone, no milscreen code.
        Written to a temporary name beside path, then renamed."""
        self.eval()
        with torch.no_grad():
            traced = torch.jit.trace(self, self._example(size))
        _atomic(path, lambda tmp: torch.jit.save(traced, tmp))
        return path

    def export_onnx(self, path, size=(128, 128), opset=13):
        """Saves an ONNX model: input "images" float32 (N, C, H, W) with N, H and W dynamic;
        outputs "mil_prob", "fc_prob", "maps" as forward(). Two functions are written out in
        basic operators: expm1, which torch 1.13 cannot export, as Exp - 1 (inside the MIL
        pooling it costs P an absolute error of float's resolution, ~1e-7: only a P below
        ~1e-6 loses relative precision), and log-sigmoid as min(x, 0) - log(1 + exp(-|x|))
        (torch's own export, Log(Sigmoid(x)), gives -inf below x = -88 and then NaN in GM
        pooling). Written to a temporary name beside path, then renamed."""
        _register_onnx_symbolics(opset)
        self.eval()
        with torch.no_grad():
            _atomic(path, lambda tmp: torch.onnx.export(
                self, (self._example(size),), tmp, input_names=["images"],
                output_names=["mil_prob", "fc_prob", "maps"], opset_version=opset,
                dynamic_axes={"images": {0: "N", 2: "H", 3: "W"}, "mil_prob": {0: "N"},
                              "fc_prob": {0: "N"}, "maps": {0: "N", 2: "h", 3: "w"}}))
        return path


def _register_onnx_symbolics(opset):
    def const(g, v):
        return g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))

    def expm1(g, x):
        return g.op("Sub", g.op("Exp", x), const(g, 1.0))

    def log_sigmoid(g, x):
        soft = g.op("Log", g.op("Add", const(g, 1.0), g.op("Exp", g.op("Neg", g.op("Abs", x)))))
        return g.op("Sub", g.op("Min", x, const(g, 0.0)), soft)

    torch.onnx.register_custom_op_symbolic("aten::expm1", expm1, opset)
    torch.onnx.register_custom_op_symbolic("aten::log_sigmoid", log_sigmoid, opset)


def _atomic(path, write):
    """write(tmp) to a temporary file in path's folder, then rename it to path: no partial
    file under the user's name if the export fails."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path):
    """What a milscreen checkpoint holds beside its weights: a dict with config (text),
    mean, std (float32 (C,)), class_names, channel_names (lists), digest, step, epoch."""
    import h5py
    with h5py.File(path, "r") as f:
        fmt = _text(f.attrs.get("format", ""))
        if fmt != "milscreen-checkpoint":
            raise ValueError(f"{path}: not a milscreen checkpoint (format '{fmt}')")
        a = f.attrs
        return {"config": _text(a["config"]),
                "mean": f["norm/mean"][()].astype(np.float32),
                "std": f["norm/std"][()].astype(np.float32),
                "class_names": _names(a.get("class_names")),
                "channel_names": _names(a.get("channel_names")),
                "digest": _text(a.get("digest", "")),
                "step": int(a.get("step", -1)), "epoch": int(a.get("epoch", -1))}


def checkpoint_digest(f):
    """The digest of an open checkpoint (h5py.File) as docs/FORMATS.md defines it: FNV-1a 64
    over the config text and the float32 parameters, layer by layer in config order (weight,
    bias, threshold). milscreen refuses a checkpoint whose weights do not match it."""
    cfg = f.attrs["config"]
    cfg = cfg.encode() if isinstance(cfg, str) else bytes(cfg)
    data = [cfg]
    for sec in [line.strip()[1:-1] for line in cfg.decode().splitlines() if line.startswith("[")]:
        for part in ("weight", "bias", "threshold"):
            if f"weights/{sec}/{part}" in f:
                data.append(f[f"weights/{sec}/{part}"][()].astype("<f4").tobytes())
    h = 0xcbf29ce484222325
    for b in b"".join(data):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def resign_checkpoint(path):
    """After changing a checkpoint's weights on purpose (with h5py): store the digest of what
    is there now, so that milscreen loads it (a changed byte is otherwise refused as damage)."""
    import h5py
    with h5py.File(path, "r+") as f:
        f.attrs["digest"] = checkpoint_digest(f)


def from_checkpoint(path, normalise=True):
    """The trained network of a milscreen checkpoint, from the checkpoint alone: built from the
    config text inside it, its weights loaded, its normalisation (/norm/mean, /norm/std)
    applied by forward() and predict() unless normalise=False. Returns a Predictor."""
    ck = read_checkpoint(path)
    net, layers = parse_config(ck["config"], source=f"{path}: config")
    model = load_checkpoint(MilNet(net, layers), path)
    return Predictor(model, ck["mean"], ck["std"], normalise, ck["class_names"],
                     ck["channel_names"], ck["config"], ck["digest"], path)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="milscreen_torch.py",
        description="The trained network of a milscreen checkpoint in PyTorch: export it.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write the network as TorchScript and/or ONNX")
    ex.add_argument("checkpoint")
    ex.add_argument("--torchscript", metavar="FILE", help="TorchScript module (torch.jit.load)")
    ex.add_argument("--onnx", metavar="FILE", help="ONNX model (opset 13)")
    ex.add_argument("--size", default="128x128", metavar="HxW",
                    help="the example input traced (any size works afterwards)")
    ex.add_argument("--no-normalise", action="store_true",
                    help="the exported network takes normalised input instead of raw pixels")
    a = ap.parse_args(argv)
    if not (a.torchscript or a.onnx):
        ap.error("export: give --torchscript FILE and/or --onnx FILE")
    try:
        h, w = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size: '{a.size}' is not HxW")
    try:
        p = from_checkpoint(a.checkpoint, normalise=not a.no_normalise)
        for path, fn in ((a.torchscript, p.export_torchscript), (a.onnx, p.export_onnx)):
            if path:
                fn(path, size=(h, w))
                print(f"{a.checkpoint} -> {path}")
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        print(f"milscreen_torch.py export: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
