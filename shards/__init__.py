"""`python -m shards`: build WebDataset shards from ReID data set folders (masks by GrabCut, keypoints
imported or detected), synthesize the embedded cloth-changing set, upload to S3 and inspect shards."""
