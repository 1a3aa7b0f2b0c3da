# Python 2.7 launcher of Autobahn|Testsuite's `wstest` (the console script's entry point,
# autobahntestsuite.wstest.run), with two stand-ins for packages that are not on GitHub or not
# buildable here; neither is used by the fuzzingclient's WebSocket traffic:
#
# 1. wstest.py imports serializer.py, which imports autobahn's wamp/test/test_serializer.py for
# its WAMP test messages, which does `import unittest2 as unittest` (only to define a TestCase
# class). unittest2 is the backport of Python 2.7's own unittest (its source is on PyPI only),
# so the standard library's unittest stands in for it.
#
# 2. fuzzing.py does `from twisted.internet import reactor, ssl` at import time, and Twisted's ssl
# module needs pyOpenSSL, whose Python-2 releases need `cryptography` <= 3.3 (C, cffi, OpenSSL
# 1.1): not buildable here against Debian 12's OpenSSL 3 and not on any reachable registry.
# The suite only touches `ssl` for wss:// URLs, and tests/conformance/run.py uses ws:// on loopback only, so when
# pyOpenSSL is missing a small `twisted.internet.ssl` module stands in. The fuzzingclient builds
# an `ssl.ClientContextFactory()` for every server (and hands it to connectWS, which uses it
# only for wss://), so the stand-in has that class; asking it for a TLS context, or anything else
# of Twisted's ssl module, fails loudly instead of silently testing something else.
import sys
import types

try:
    import unittest2  # noqa: F401
except ImportError:
    import unittest
    sys.modules['unittest2'] = unittest

try:
    import OpenSSL  # noqa: F401  (a real pyOpenSSL wins)
except ImportError:
    import twisted.internet
    _ssl = types.ModuleType('twisted.internet.ssl')
    _ssl.__doc__ = 'stand-in: pyOpenSSL is not installed, wss:// is not available'

    class ClientContextFactory(object):
        def getContext(self, *args, **kwargs):
            raise RuntimeError('wss:// needs pyOpenSSL, which is not installed (see wstest-py2.py)')

    def optionsForClientTLS(*args, **kwargs):
        raise RuntimeError('wss:// needs pyOpenSSL, which is not installed (see wstest-py2.py)')

    _ssl.ClientContextFactory = ClientContextFactory
    _ssl.optionsForClientTLS = optionsForClientTLS
    sys.modules['twisted.internet.ssl'] = _ssl
    twisted.internet.ssl = _ssl

from autobahntestsuite import wstest  # noqa: E402

if __name__ == '__main__':
    sys.argv[0] = 'wstest'
    wstest.run()
