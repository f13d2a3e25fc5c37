// Compiled into every layer library so a layer with no sources yet still forms a target.
