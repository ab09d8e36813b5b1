from ticketx.cli import main

main()
