"""The build and update engine: scanning sources into the store, rendering overlays, applying a
plan to a host's tree (journaled, atomic per path), and running builds and base updates over many
hosts in forked workers."""
