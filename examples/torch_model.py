"""gpunn inside PyTorch: a training loop whose activations, loss and optimizer all come from ``gpunn.torch``.

A small classifier (``torch.nn.Linear`` layers with ``gpunn.torch.GELU`` and ``gpunn.torch.SiLU``) learns labels made
by a random "teacher" network, with ``gpunn.torch.CrossEntropyLoss``, ``gpunn.torch.optim.AdamW`` and a cosine LR
schedule from ``torch.optim.lr_scheduler``. The very same loop then runs on pure PyTorch (``torch.nn.GELU``,
``torch.nn.SiLU``, ``torch.nn.CrossEntropyLoss``, ``torch.optim.AdamW``) from the same start, and the script reports
both final losses and how far apart they are. CPU tensors take gpunn's CPU loops, CUDA tensors its CUDA kernels.

Run: python examples/torch_model.py
"""

import torch

import gpunn.torch as gt


def make_model(nn, seed):
    """The classifier, with activations from ``nn`` (``gpunn.torch`` or ``torch.nn``), same weights for a seed."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 64), nn.GELU(), torch.nn.Linear(64, 64), nn.SiLU(),
                               torch.nn.Linear(64, 4))


def make_data(n, seed, device):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
        labels = teacher(x).argmax(dim=1)
    return x.to(device), labels.to(device)


def train(nn, optim, x, labels, steps, lr, seed):
    """``steps`` full-batch steps; returns the model and the loss at each step."""
    model = make_model(nn, seed).to(x.device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return model, losses


def main(steps=200, lr=1e-2, seed=0):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, labels = make_data(512, seed, device)
    model, losses = train(gt, gt.optim, x, labels, steps, lr, seed)
    _, torch_losses = train(torch.nn, torch.optim, x, labels, steps, lr, seed)
    for step in range(0, steps, 50):
        print(f"step {step:4d}  loss {losses[step]:.4f}  (pure torch {torch_losses[step]:.4f})")
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == labels).float().mean().item()
    gap = abs(losses[-1] - torch_losses[-1]) / torch_losses[-1]
    print(f"RESULT loss {losses[0]:.4f} -> {losses[-1]:.4f}, pure torch -> {torch_losses[-1]:.4f} on {device}; "
          f"train accuracy {accuracy:.4f}; relative gap {gap:.2e}")
    return losses, torch_losses


if __name__ == "__main__":
    main()
