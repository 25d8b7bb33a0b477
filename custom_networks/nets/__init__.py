from .rcb_unetplusplus import RCBUNetPlusPlus
