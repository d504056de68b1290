# _comm.pxi — the communicator's meeting places (src/comm_bootstrap.h), for the tests.
