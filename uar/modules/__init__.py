"""Building blocks of UAR (uar-paper.md §2): attention, LSU, CRA, TIR, Transformer, Base CNN."""

from uar.modules.attention import MultiHeadAttention
from uar.modules.cnn import CNNEncoder
from uar.modules.cra import CRA, DualGate, build_basis, triplet_loss
from uar.modules.lsu import LSU, sinusoidal_positions
from uar.modules.tir import TIRMask, mask_loss
from uar.modules.transformer import Decoder, DecoderLayer, Encoder, EncoderLayer

__all__ = [
    "CNNEncoder",
    "CRA",
    "Decoder",
    "DecoderLayer",
    "DualGate",
    "Encoder",
    "EncoderLayer",
    "LSU",
    "MultiHeadAttention",
    "TIRMask",
    "build_basis",
    "mask_loss",
    "sinusoidal_positions",
    "triplet_loss",
]
