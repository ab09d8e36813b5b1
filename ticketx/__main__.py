from ticketx.interrupt import entry

entry()
