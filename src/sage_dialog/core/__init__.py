"""The ground floor: errors, typed records, the SAC codec, file I/O, configs and prompts."""
