from flashcart import create_app

app = create_app()
