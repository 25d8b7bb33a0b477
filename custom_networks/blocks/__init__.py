from .cbam import CBAM, ChannelAttention, SpatialAttention
