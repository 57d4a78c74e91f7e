"""The tree model, pure: manifests (what a tree holds), composing a host's tree from a base and
overlay layers, diffing two trees into a plan, and the rules for host-local changes. Nothing here
touches the disk, so every rule can be table-tested."""
