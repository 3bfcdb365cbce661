"""Monte Carlo gradient mollification: pure numerics (numpy, scipy), no transport, no runtime."""
