"""The networks of 3DSL: backbones, rgb stream, shape stream, discriminator, two-stream network.

Backbones are torchvision ResNets; the RGB stream gives the appearance feature; the shape stream (E_3D
split into E_pose and E_shape, with multi-granularity part features) regresses pose, camera, shape and
per-vertex displacements and gives the 3D shape feature; the HMR-style discriminator judges (theta, beta)
against the pose/shape prior; the two-stream network wires them together from the config.
"""
