-- handoff.form (form bodies both ways) and the Twilio-style signature text of
-- handoff.signature, checked against the example in Twilio's security documentation.
local form = require "handoff.form"
local sig = require "handoff.signature"
local crypto = require "handoff.crypto"
local T = {}

function T.form_encodes_in_order_and_escapes()
  assert(form.escape("a b&c=d/é") == "a%20b%26c%3Dd%2F%C3%A9")
  assert(form.escape("AZaz09-._~") == "AZaz09-._~")
  assert(form.encode({ { "Body", "hi there" }, { "Skip", nil }, { "Attributes", '{"k":1}' } })
         == "Body=hi%20there&Attributes=%7B%22k%22%3A1%7D")
end

function T.form_decodes_plus_percent_and_repeats()
  local fields, list = form.decode("Body=hello+world%21&Media=&Body=second&Flag")
  assert(fields.Body == "hello world!" and fields.Media == "" and fields.Flag == "")
  assert(#list == 4 and list[3][1] == "Body" and list[3][2] == "second")
  local round = form.decode(form.encode({ { "Author", "+1 555 & co" } }))
  assert(round.Author == "+1 555 & co")
  assert(next((form.decode(""))) == nil)
end

function T.twilio_signature_of_the_documented_example()
  local _, list = form.decode("To=%2B18005551212&CallSid=CA1234567890ABCDE&Caller=%2B14158675310"
                              .. "&Digits=1234&From=%2B14158675310")
  local data = sig.url_and_params("https://mycompany.com/myapp.php?foo=1&bar=2", list)
  assert(data == "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675310"
                 .. "Digits1234From+14158675310To+18005551212", data)
  assert(crypto.hmac("sha1", "12345", data, "base64") == "GvWf1cFY/Q7PnoempGyD5oXAezc=")
  assert(sig.hmac_ok("12345", data, "GvWf1cFY/Q7PnoempGyD5oXAezc=", { alg = "sha1", enc = "base64" }))
  -- a repeated name: its values sorted too
  assert(sig.url_and_params("u", { { "b", "2" }, { "a", "9" }, { "b", "1" } }) == "ua9b1b2")
end

return T
