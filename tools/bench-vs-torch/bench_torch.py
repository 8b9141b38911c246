"""The PyTorch side of bench-vs-torch: the same work through PyTorch on the same libtorch, one call at a time.

Started by the C# tool, never alone. Protocol on stdin/stdout, one line each way:
  setup <json>   -> "ready <counts>"   builds the UNet, the VAE decoder and the AdamW case from the json
  lora           -> "ready <counts>"   attaches the LoRA to the same UNet (one UNet in memory at full size)
  run <case>     -> "<case> <seconds>" runs one call of the case, timed here (pipe time excluded)
  quit
<counts> are parameter counts (name=number) that the C# side compares with its own models.
Models are written here from the diffusers configs (no diffusers needed): the SD 1.5 UNet (ResNet blocks,
Transformer2D with self/cross attention and GEGLU, down/up sampling), the VAE decoder, kohya's LoRA on
every Linear/Conv2d under a Transformer2D block, as our Models and Training code build them.
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout) if temb else None
        self.norm2 = nn.GroupNorm(groups, cout, eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


def split_heads(x, heads):
    b, n, c = x.shape
    return x.unflatten(-1, (heads, c // heads)).transpose(1, 2)


def attend(q, k, v, heads):
    # Our engine's attention on libtorch 1.13 (no fused kernel): softmax(q kᵀ · scale) v per head.
    q, k, v = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1 / math.sqrt(q.shape[-1]))
    return torch.matmul(torch.softmax(scores, -1), v).transpose(1, 2).flatten(2)


class Attention(nn.Module):
    def __init__(self, dim, context, heads, bias=False):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(context, dim, bias=bias)
        self.to_v = nn.Linear(context, dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x, context=None):
        context = x if context is None else context
        return self.to_out[0](attend(self.to_q(x), self.to_k(context), self.to_v(context), self.heads))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Identity(), nn.Linear(dim * 4, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, context, heads):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, context, heads)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2D(nn.Module):
    def __init__(self, channels, context, heads, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, 1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, context, heads)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            t = block(t, context)
        # contiguous() as diffusers' Transformer2DModel and our engine: without it proj_out would take a channels-last
        # view, and its output would carry that layout into every following block (other kernels, extra copies).
        return self.proj_out(t.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()) + x


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def timestep_features(t, dim, batch):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = torch.full((batch, 1), float(t)) * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)  # flip_sin_to_cos


class UNet(nn.Module):
    """UNet2DConditionModel for SD 1.x configs (cross-attention down/up blocks, a cross-attention mid block)."""

    def __init__(self, cfg):
        super().__init__()
        ch, layers, groups, eps = cfg["block_out_channels"], cfg["layers_per_block"], cfg["norm_num_groups"], cfg["norm_eps"]
        heads, ctx = cfg["attention_head_dim"], cfg["cross_attention_dim"]  # SD 1.x: attention_head_dim is the head count
        temb = ch[0] * 4
        self.ch0 = ch[0]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        self.time_embedding = nn.Sequential(nn.Linear(ch[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.down = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            cin, out = out, ch[i]
            block = nn.Module()
            block.resnets = nn.ModuleList([ResnetBlock(cin if j == 0 else out, out, temb, groups, eps) for j in range(layers)])
            block.attentions = nn.ModuleList([Transformer2D(out, ctx, heads, groups) for _ in range(layers)]) if kind.startswith("CrossAttn") else None
            block.downsample = Downsample(out) if i < len(ch) - 1 else None
            self.down.append(block)
        self.mid_resnets = nn.ModuleList([ResnetBlock(ch[-1], ch[-1], temb, groups, eps) for _ in range(2)])
        self.mid_attention = Transformer2D(ch[-1], ctx, heads, groups)
        self.up = nn.ModuleList()
        rev = list(reversed(ch))
        prev = rev[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            out, skip_in = rev[i], rev[min(i + 1, len(ch) - 1)]
            block = nn.Module()
            block.resnets = nn.ModuleList([
                ResnetBlock((prev if j == 0 else out) + (skip_in if j == layers else out), out, temb, groups, eps) for j in range(layers + 1)])
            block.attentions = nn.ModuleList([Transformer2D(out, ctx, heads, groups) for _ in range(layers + 1)]) if kind.startswith("CrossAttn") else None
            block.upsample = Upsample(out) if i < len(ch) - 1 else None
            self.up.append(block)
            prev = out
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, x, t, context):
        temb = self.time_embedding(timestep_features(t, self.ch0, x.shape[0]))
        x = self.conv_in(x)
        skips = [x]
        for block in self.down:
            for j, resnet in enumerate(block.resnets):
                x = resnet(x, temb)
                if block.attentions is not None:
                    x = block.attentions[j](x, context)
                skips.append(x)
            if block.downsample is not None:
                x = block.downsample(x)
                skips.append(x)
        x = self.mid_resnets[0](x, temb)
        x = self.mid_attention(x, context)
        x = self.mid_resnets[1](x, temb)
        for block in self.up:
            for j, resnet in enumerate(block.resnets):
                x = resnet(torch.cat([x, skips.pop()], 1), temb)
                if block.attentions is not None:
                    x = block.attentions[j](x, context)
            if block.upsample is not None:
                x = block.upsample(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VaeAttention(nn.Module):
    def __init__(self, channels, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, 1e-6)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        out = self.to_out[0](attend(self.to_q(t), self.to_k(t), self.to_v(t), 1))
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class VaeDecoder(nn.Module):
    """AutoencoderKL's post_quant_conv and decoder."""

    def __init__(self, cfg):
        super().__init__()
        ch, layers, groups = cfg["block_out_channels"], cfg["layers_per_block"], cfg["norm_num_groups"]
        latent = cfg["latent_channels"]
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)
        self.conv_in = nn.Conv2d(latent, ch[-1], 3, padding=1)
        self.mid_resnets = nn.ModuleList([ResnetBlock(ch[-1], ch[-1], 0, groups, 1e-6) for _ in range(2)])
        self.mid_attention = VaeAttention(ch[-1], groups)
        self.up = nn.ModuleList()
        rev = list(reversed(ch))
        prev = rev[0]
        for i, out in enumerate(rev):
            block = nn.Module()
            block.resnets = nn.ModuleList([ResnetBlock(prev if j == 0 else out, out, 0, groups, 1e-6) for j in range(layers + 1)])
            block.upsample = Upsample(out) if i < len(ch) - 1 else None
            self.up.append(block)
            prev = out
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], 1e-6)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, z):
        x = self.conv_in(self.post_quant_conv(z))
        x = self.mid_resnets[1](self.mid_attention(self.mid_resnets[0](x)))
        for block in self.up:
            for resnet in block.resnets:
                x = resnet(x)
            if block.upsample is not None:
                x = block.upsample(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class LoraLayer(nn.Module):
    """kohya's LoRAModule: the frozen layer plus up(down(x)) · alpha / rank (down Kaiming-uniform, up zero)."""

    def __init__(self, layer, rank, alpha):
        super().__init__()
        self.layer = layer
        if isinstance(layer, nn.Conv2d):
            self.lora_down = nn.Conv2d(layer.in_channels, rank, 1, bias=False)
            self.lora_up = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        else:
            self.lora_down = nn.Linear(layer.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.scale = alpha / rank

    def forward(self, x):
        return self.layer(x) + self.lora_up(self.lora_down(x)) * self.scale


def add_lora(unet, rank, alpha):
    """LoRA on every Linear/Conv2d under a Transformer2D block, as kohya's network targets; returns its parameters."""
    params = []
    for module in [m for m in unet.modules() if isinstance(m, Transformer2D)]:
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, (nn.Linear, nn.Conv2d)):
                    lora = LoraLayer(child, rank, alpha)
                    setattr(parent, name, lora) if not isinstance(parent, nn.ModuleList) else parent.__setitem__(int(name), lora)
                    params += [lora.lora_down.weight, lora.lora_up.weight]
    return params


def randomise(module):
    """Matrices and kernels N(0, 0.02²), norm scales 1, biases 0: the C# side's random weights."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
            elif name.endswith(".weight"):
                p.fill_(1)
            else:
                p.zero_()
    return module


def count(params):
    return sum(p.numel() for p in params)


class Bench:
    def __init__(self, setup):
        torch.set_num_threads(setup["threads"])
        torch.manual_seed(0)
        self.setup = setup
        latent, batch = setup["latent_size"], setup["batch"]
        self.unet = randomise(UNet(setup["unet"])).eval().requires_grad_(False)
        x = torch.randn(batch, 4, latent, latent)
        context = torch.randn(batch, 77, setup["unet"]["cross_attention_dim"])

        def unet_forward():
            with torch.inference_mode():
                self.unet(x, 500, context)

        self.vae = randomise(VaeDecoder(setup["vae"])).eval().requires_grad_(False)
        z = torch.randn(1, 4, latent, latent)

        def vae_decode():
            with torch.inference_mode():
                self.vae(z)

        self.adamw_params = [torch.randn(s).requires_grad_() for s in setup["adamw_shapes"]]
        self.cases = {
            "unet_forward": unet_forward,
            "vae_decode": vae_decode,
            "adamw_step": self.adamw(None),  # PyTorch's default: on CPU its single-tensor loop
            "adamw_step_foreach": self.adamw(True),
        }
        self.counts = {"unet": count(self.unet.parameters()), "vae_decoder": count(self.vae.parameters()),
                       "adamw": count(self.adamw_params)}

    def adamw(self, foreach):
        params = [p.detach().clone().requires_grad_() for p in self.adamw_params]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=foreach)

        def step():
            with torch.no_grad():
                optimizer.step()
        return step

    def attach_lora(self):
        setup, latent = self.setup, self.setup["latent_size"]
        unet = self.unet.train()
        params = add_lora(unet, setup["lora_rank"], setup["lora_alpha"])
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        noisy, target = torch.randn(1, 4, latent, latent), torch.randn(1, 4, latent, latent)
        text = torch.randn(1, 77, setup["unet"]["cross_attention_dim"])

        def lora_step():
            loss = F.mse_loss(unet(noisy, 500, text), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.cases["lora_step"] = lora_step
        self.counts["lora"] = count(params)


def main():
    bench = None
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        if command == "setup":
            bench = Bench(json.loads(rest))
        elif command == "lora":
            bench.attach_lora()
        elif command == "run":
            start = time.perf_counter()
            bench.cases[rest]()
            print(f"{rest} {time.perf_counter() - start:.9f}", flush=True)
            continue
        elif command == "quit":
            return
        print("ready " + " ".join(f"{k}={v}" for k, v in bench.counts.items()), flush=True)


if __name__ == "__main__":
    main()
