"""The body: the 3D half of 3DSL.

SMPL+D through smplx (`smpld`), a generated SMPL-format stand-in body for machines without the licensed file
(`standin`), a reader of SMPL files that runs no code in them and a converter to pickle-free .npz (`convert`),
the weak-perspective camera and keypoint projection (`camera`), pytorch3d silhouette and textured renderers on
that same camera (`render`), the pose/shape prior (AMASS-format folders or a joint-limit sampler, `prior`),
the shared names and index tables (`constants`) and a contact sheet of bodies (`show`).
"""
