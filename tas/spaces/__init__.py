"""The families of networks TAS searches, a file each: `resnet` (CIFAR and torchvision
ResNets), `vgg` (the CIFAR VGGs), `mobilenet` (torchvision's MobileNetV2). Each constructor
returns a `tas.space.SearchSpace` and is reached as ``SearchSpace.cifar_resnet(...)`` etc.; a
new family is a new file here plus its name in `tas.space.BACKBONES` and `SearchSpace.from_name`.
"""
