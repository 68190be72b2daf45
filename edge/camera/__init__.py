"""The kitchen camera agent: frames in, confirmed violations with evidence out."""
