from .cbam import CBAM, ChannelAttention, SpatialAttention
from .affinity_attention import AffinityAttention
from .scale_feature_attention import ScaleFeatureAttention
from .multiscale_residual import MultiScaleConv, MultiScaleResidualUnit
