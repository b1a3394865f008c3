import torch
import torch.nn as nn

batch_size = 16
in_features = 256
out_features = 256  # equal to in_features: the model adds its input back (a residual block)


class Model(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.residual = in_features == out_features  # chosen by comparing sizes, as MobileNet's block does

    def forward(self, x):
        y = torch.relu(self.fc(x))
        return x + y if self.residual else y


def get_inputs():
    return [torch.randn(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features]
