"""gpunn inside PyTorch: a gpunn activation as a ``torch.autograd.Function`` and ``gpunn.optim.Adam`` stepping the
model's parameters in place from their ``.grad``.

gpunn takes PyTorch tensors as they are: CPU tensors take gpunn's CPU path, CUDA tensors its CUDA kernels (no copy).
The same model is trained side by side with ``torch.optim.Adam`` and ``torch.nn.functional.silu`` from the same
start, and the script reports how far the two sets of parameters drift apart.

Run: python examples/torch_model.py
"""

import copy

import torch

import gpunn


class GpunnSiLU(torch.autograd.Function):
    """y = x * sigmoid(x) forward and its gradient, both by gpunn kernels."""

    @staticmethod
    def forward(ctx, x):
        x = x.detach().contiguous()
        ctx.save_for_backward(x)
        return gpunn.silu(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return gpunn.silu_backward(dy.contiguous(), x)


class Net(torch.nn.Module):
    def __init__(self, use_gpunn):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 32)
        self.fc2 = torch.nn.Linear(32, 1)
        self.use_gpunn = use_gpunn

    def forward(self, x):
        z = self.fc1(x)
        h = GpunnSiLU.apply(z) if self.use_gpunn else torch.nn.functional.silu(z)
        return self.fc2(h)


def main(steps=200, lr=1e-2, seed=0):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    x = torch.randn(256, 8, device=device)
    y = (x[:, :1] * x[:, 1:2] + torch.sin(x[:, 2:3])).contiguous()

    model = Net(use_gpunn=True).to(device)
    reference = copy.deepcopy(model)
    reference.use_gpunn = False
    params = list(model.parameters())
    opt = gpunn.optim.Adam([p.data for p in params], lr=lr)      # updates the tensors' storage in place
    ref_opt = torch.optim.Adam(reference.parameters(), lr=lr)

    losses = []
    for step in range(steps):
        for p in params:
            p.grad = None
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step([p.grad for p in params])
        losses.append(loss.item())

        ref_opt.zero_grad()
        torch.nn.functional.mse_loss(reference(x), y).backward()
        ref_opt.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {losses[-1]:.4f}")

    drift = max((a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
    print(f"RESULT loss {losses[0]:.4f} -> {losses[-1]:.4f} on {device}; "
          f"max |param - torch.optim.Adam param| after {steps} steps: {drift:.2e}")
    return losses, drift


if __name__ == "__main__":
    main()
