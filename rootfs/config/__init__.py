"""The site's configuration: site.toml's tables and the hostcfg/hosts.toml inventory, loaded into
frozen values and validated (every error names the file and TOML key). The bottom layer: it knows
every section's keys, and nothing here knows how they are used."""
