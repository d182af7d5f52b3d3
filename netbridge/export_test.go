package netbridge

// IsVanishedLink lets the external tests recognise the failure netbridge
// itself retries (incusd's vanished-link failure) when they edit a network
// by hand.
var IsVanishedLink = isVanishedLink
