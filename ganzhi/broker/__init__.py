"""The MQTT broker's security, managed at run time: Mosquitto's dynamic-security plugin.

``dynsec`` speaks the plugin's control topic (``$CONTROL/dynamic-security/v1``) and writes
the broker's first configuration; :mod:`ganzhi.provisioning` builds device provisioning
on it. See docs/edge-security-notes.md for why the plugin replaced the password file.
"""
