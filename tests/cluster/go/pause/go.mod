// The pod sandbox process of the local node: a static binary, packed into the pause image.
module modelpilot.io/tests/cluster/pause

go 1.25.0
