from __future__ import annotations

import xml.etree.ElementTree as ET

from ai_operator.telephony import signature_valid, twilio_signature, twiml_connect_stream

# Twilio's published request-validation example.
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_signature_matches_twilios_documented_example():
    assert twilio_signature(TOKEN, URL, PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signature_check_rejects_tampering_and_absence():
    good = twilio_signature(TOKEN, URL, PARAMS)
    assert signature_valid(TOKEN, URL, PARAMS, good)
    assert not signature_valid(TOKEN, URL, {**PARAMS, "To": "+1900"}, good)
    assert not signature_valid("other", URL, PARAMS, good)
    assert not signature_valid(TOKEN, URL, PARAMS, None)


def test_twiml_connects_a_stream_with_escaped_attributes():
    xml = twiml_connect_stream("wss://example.com/twilio/stream?a=1&b=2", {"from": '"Ann" <x>'})
    stream = ET.fromstring(xml).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://example.com/twilio/stream?a=1&b=2"
    param = stream.find("Parameter")
    assert param is not None and param.get("value") == '"Ann" <x>'
