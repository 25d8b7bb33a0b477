from .rcb_unetplusplus import RCBUNetPlusPlus
from .resattunet import ResAttUNet, load_torchvision_resnet34
from .iacnn import IACNN
from .msrunet import MSRUNet
